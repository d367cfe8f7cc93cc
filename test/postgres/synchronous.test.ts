// Replication-aware writes: synchronousCommit: 'remote_apply' makes every grant and renewal
// wait until the synchronous standby applied it; with the standby's replication frozen, the
// call fails after timeoutMs with a timeout (never hangs). Prints what it costs per call.
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { postgresBackend, type PostgresBackend } from '../../src/backends/postgres/index.js'
import { BackendTimeoutError, OptionsError } from '../../src/errors.js'
import { startPostgresStandby, type PostgresStandbyPair } from '../../testkit/index.js'

let pair: PostgresStandbyPair
const backends: PostgresBackend[] = []

beforeAll(async () => {
  // Synchronous standby named, but commits are only local unless a statement asks for more.
  pair = await startPostgresStandby({
    settings: { synchronous_standby_names: '*', synchronous_commit: 'local' },
  })
})
afterAll(async () => {
  await Promise.all(backends.splice(0).map((b) => b.close()))
  await pair?.stop()
})

const backend = (synchronousCommit?: 'remote_apply') => {
  const b = postgresBackend({
    connectionString: pair.primary.connectionString,
    timeoutMs: 1_000,
    synchronousCommit,
  })
  backends.push(b)
  return b
}
const request = (resource: string, candidate = 'a') => ({
  resource,
  candidate,
  leaseMs: 5_000,
  tickets: 1,
  metadata: null,
})

async function onStandby(resource: string): Promise<number> {
  const client = new pg.Client({ connectionString: pair.standby.connectionString })
  await client.connect()
  try {
    const { rows } = await client.query<{ n: string }>(
      'SELECT count(*) AS n FROM conclave.grants WHERE resource = $1',
      [resource],
    )
    return Number(rows[0]!.n)
  } finally {
    await client.end()
  }
}

it('checks synchronousCommit', () => {
  // off too: a crash could lose a grant already answered, with no grace to cover it.
  for (const bad of ['remote-apply', 'ON', 1, true, 'off']) {
    expect(() =>
      postgresBackend({
        connectionString: pair.primary.connectionString,
        synchronousCommit: bad as 'on',
      }),
    ).toThrow(OptionsError)
  }
  expect(() =>
    postgresBackend({
      connectionString: pair.primary.connectionString,
      synchronousCommit: 'x' as 'on',
    }),
  ).toThrow(/synchronousCommit is one of remote_apply, on, remote_write, local \(.*not off/)
})

it('with remote_apply, a grant is on the standby when acquire answers; renewals too', async () => {
  const b = backend('remote_apply')
  const resource = `sync/${randomBytes(4).toString('hex')}`
  const result = await b.acquire(request(resource))
  expect(result.acquired).toBe(true)
  expect(await onStandby(resource)).toBe(1)
  const token = result.acquired ? result.token : 0
  expect(await b.renew([{ resource, candidate: 'a', token, leaseMs: 5_000 }])).toEqual([true])
})

it('with remote_apply and no standby answering, grants and renewals fail after timeoutMs', async () => {
  const b = backend('remote_apply')
  const resource = `sync-frozen/${randomBytes(4).toString('hex')}`
  const first = await b.acquire(request(resource))
  const token = first.acquired ? first.token : 0
  pair.replication.cut({ mode: 'blackhole' })
  try {
    let started = performance.now()
    const acquire = await b.acquire(request(`${resource}-2`)).catch((e: unknown) => e)
    expect(acquire).toBeInstanceOf(BackendTimeoutError)
    expect(performance.now() - started).toBeLessThan(3_000)
    started = performance.now()
    const renewal = await b
      .renew([{ resource, candidate: 'a', token, leaseMs: 5_000 }])
      .catch((e: unknown) => e)
    expect(renewal).toBeInstanceOf(BackendTimeoutError)
    expect(performance.now() - started).toBeLessThan(3_000)
    // A schedule's record waits for the standby like a grant (a fire claimed on the primary
    // alone could run again after a promotion).
    const record = await b
      .writeRecord({
        resource,
        key: 'cron',
        value: 1,
        token,
        version: 0,
      })
      .catch((e: unknown) => e)
    expect(record).toBeInstanceOf(BackendTimeoutError)
  } finally {
    pair.replication.cut({ mode: 'reset' })
    pair.replication.restore()
  }
  // Once the standby is back, the commits that waited end and calls work again.
  await pair.caughtUp(20_000)
  const again = await b.acquire(request(`${resource}-3`))
  expect(again.acquired).toBe(true)
  expect(await onStandby(`${resource}-3`)).toBe(1)
}, 40_000)

it('prints what remote_apply costs per acquire and per renewal', async () => {
  const measure = async (b: PostgresBackend) => {
    const resource = `sync-cost/${randomBytes(4).toString('hex')}`
    const first = await b.acquire(request(resource))
    const token = first.acquired ? first.token : 0
    const n = 30
    let started = performance.now()
    for (let i = 0; i < n; i++) await b.acquire(request(resource))
    const acquireMs = (performance.now() - started) / n
    started = performance.now()
    for (let i = 0; i < n; i++) {
      await b.renew([{ resource, candidate: 'a', token, leaseMs: 5_000 }])
    }
    return { acquireMs, renewMs: (performance.now() - started) / n }
  }
  const local = await measure(backend())
  const remote = await measure(backend('remote_apply'))
  console.log(
    `postgres synchronousCommit (loopback): acquire ${local.acquireMs.toFixed(2)} ms local, ` +
      `${remote.acquireMs.toFixed(2)} ms remote_apply; renewal ${local.renewMs.toFixed(2)} ms local, ` +
      `${remote.renewMs.toFixed(2)} ms remote_apply`,
  )
  expect(remote.acquireMs).toBeGreaterThan(0)
}, 30_000)
