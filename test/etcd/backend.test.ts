// The etcd backend beyond the conformance suite: the queue shape that gives etcd3's Election two
// leaders (its issue #176), failover from a killed holder process, one keepalive per tick for
// many grants, a lost lease, another process's key under the same candidate id, and bad input.
import { fork, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { Etcd3 } from 'etcd3'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { backendFromUrl, etcdBackend, type EtcdBackend } from '../../src/backends/etcd/index.js'
import { Election } from '../../src/election.js'
import { OptionsError } from '../../src/errors.js'
import { CANDIDATE_FILE, candidateArgs } from '../../testkit/candidate.js'
import { startEtcd, type EtcdServer } from '../../testkit/index.js'
import { backendWithClient, difference, grpcReceived, queuedKeys, sleep, until } from './helpers.js'

let server: EtcdServer
let raw: Etcd3
const prefix = `etcd-backend-${randomBytes(4).toString('hex')}/`
const backends: EtcdBackend[] = []
const elections: Election[] = []
const children: ChildProcess[] = []
const errors: Error[] = []

const resource = (label: string) => `${label}/${randomBytes(4).toString('hex')}`
const backend = () => {
  const b = backendWithClient(server.endpoint, prefix)
  backends.push(b)
  return b
}
const election = (b: EtcdBackend, res: string, leaseMs: number, id?: string) => {
  const e = new Election(b, res, { leaseMs, ...(id ? { id } : {}) })
  e.on('error', (error) => errors.push(error))
  elections.push(e)
  return e
}

beforeAll(async () => {
  server = await startEtcd()
  raw = new Etcd3({ hosts: server.endpoint })
})
afterEach(async () => {
  await Promise.all(elections.splice(0).map((e) => e.close()))
  await Promise.all(backends.splice(0).map((b) => b.close()))
  expect(errors.splice(0).map((e) => e.message)).toEqual([])
})
afterAll(async () => {
  for (const child of children) child.kill('SIGKILL')
  raw?.close()
  await server?.stop()
})

it('never has two leaders when the middle of three queued candidates withdraws (etcd3 #176)', async () => {
  const res = resource('middle')
  const lease = 2_000
  const [a, b, c] = [backend(), backend(), backend()].map((x) => election(x, res, lease)) as [
    Election,
    Election,
    Election,
  ]
  const ta = await a.campaign()
  const withdraw = new AbortController()
  const bWaiting = b.campaign({ signal: withdraw.signal }).catch((error: unknown) => error)
  await until(async () => (await queuedKeys(raw, prefix, res)).length === 2, 5_000, 'B queued')
  let cTerm: Awaited<ReturnType<Election['campaign']>> | undefined
  void c.campaign().then((t) => (cTerm = t))
  await until(async () => (await queuedKeys(raw, prefix, res)).length === 3, 5_000, 'C queued')
  const keys = await queuedKeys(raw, prefix, res)
  expect(keys.map((k) => k.slice(`${prefix}${res}#`.length))).toEqual([a.id, b.id, c.id])

  // B, between the holder and C, leaves: C is woken (its predecessor's key is deleted) but must
  // see that A still leads. Sample for two leases, through several renewals and wake-ups.
  withdraw.abort(new Error('B gives up'))
  expect(await bWaiting).toMatchObject({ message: 'B gives up' })
  const end = performance.now() + 2 * lease
  while (performance.now() < end) {
    expect([a, b, c].filter((e) => e.isLeader).map((e) => e.id)).toEqual([a.id])
    expect((await c.leaders()).map((h) => h.candidate)).toEqual([a.id])
    await sleep(20)
  }
  expect(cTerm).toBeUndefined()
  expect((await queuedKeys(raw, prefix, res)).length).toBe(2)

  // A hands over: C (not B, which left) takes over, with a larger token.
  await ta.resign()
  await until(() => cTerm !== undefined, 5_000, 'C elected')
  expect(cTerm!.token).toBeGreaterThan(ta.token)
  expect(b.isLeader).toBe(false)
  expect((await a.leaders()).map((h) => h.candidate)).toEqual([c.id])
})

it('fails over from a SIGKILLed holder process after about one lease', async () => {
  const lease = 2_000
  const res = resource('kill')
  // etcd://host:port, the endpoint without its http://
  const url = `etcd://${new URL(server.endpoint).host}?prefix=${encodeURIComponent(prefix)}`
  const child = fork(CANDIDATE_FILE, candidateArgs(url, res, { leaseMs: lease }), {
    execArgv: ['--import', 'tsx'],
    stdio: 'inherit',
  })
  children.push(child)
  const elected = await new Promise<{ token: number; candidate: string }>((resolve, reject) => {
    child.on('message', (m: { type: string; token: number; candidate: string }) => {
      if (m.type === 'elected') resolve(m)
    })
    child.once('exit', (code) => reject(new Error(`candidate exited early (${code})`)))
  })
  const checker = backend()
  // A waiter whose own lease is far beyond this test: it wins by the dead holder's key going.
  const waiter = election(backend(), res, 60_000)
  let electedAt = 0
  const waiting = waiter.campaign().then((term) => ((electedAt = performance.now()), term))
  await sleep(lease / 2)
  expect(waiter.isLeader).toBe(false)

  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGKILL')
  await exited
  const killedAt = performance.now()
  const holders = await checker.holders(res)
  expect(holders.map((h) => h.candidate)).toEqual([elected.candidate])
  // remainingMs is etcd's whole seconds rounded up: the key cannot go a second before that.
  const atLeast = holders[0]!.remainingMs - 1_000

  const term = await waiting
  expect(term.token).toBeGreaterThan(elected.token)
  expect(electedAt - killedAt).toBeGreaterThanOrEqual(atLeast)
  // About one lease (etcd checks expiry every 500 ms), far from the waiter's own 60 s.
  expect(electedAt - killedAt).toBeLessThan(5 * lease)
})

it('renews any number of grants with one keepalive and one read per tick', async () => {
  const lease = 3_000 // renewMs 1000
  const shared = backend()
  const count = 60
  const held = Array.from({ length: count }, (_, i) =>
    election(shared, resource(`many${i}`), lease),
  )
  await Promise.all(held.map((e) => e.campaign()))
  const before = await grpcReceived(server.endpoint)
  await sleep(3 * lease)
  const delta = difference(await grpcReceived(server.endpoint), before)
  expect(held.every((e) => e.isLeader)).toBe(true)
  // 9 s at one tick a second: about 9 of each, whatever the number of grants (not 60 x 9).
  expect(delta.LeaseKeepAlive ?? 0).toBeGreaterThanOrEqual(5)
  expect(delta.LeaseKeepAlive ?? 0).toBeLessThanOrEqual(15)
  expect(delta.LeaseTimeToLive ?? 0).toBeLessThanOrEqual(15)
  expect(delta.Txn ?? 0).toBe(0)
  expect(delta.LeaseGrant ?? 0).toBe(0)
})

it('ends every term on a lease etcd revoked, then campaigns on a fresh lease', async () => {
  const lease = 3_000
  const b = backend()
  const res = [resource('revoked'), resource('revoked')]
  const terms: number[][] = [[], []]
  const reasons: string[] = []
  const runs = res.map((r, i) => {
    const e = election(b, r, lease)
    e.on('revoked', (_t, reason) => reasons.push(reason))
    void e.run(async (term) => {
      terms[i]!.push(term.token)
      await new Promise((resolve) => term.signal.addEventListener('abort', resolve))
    })
    return e
  })
  await until(() => terms.every((t) => t.length === 1), 5_000, 'both elected')
  const { leases } = await raw.leaseClient.leaseLeases()
  const ours = (
    await Promise.all(
      leases.map(async ({ ID }) => ({
        ID,
        keys: (await raw.leaseClient.leaseTimeToLive({ ID, keys: true })).keys.map(String),
      })),
    )
  ).filter((l) => l.keys.some((k) => k.startsWith(`${prefix}${res[0]}#`)))
  expect(ours).toHaveLength(1)
  expect(ours[0]!.keys.sort()).toEqual(runs.map((e, i) => `${prefix}${res[i]}#${e.id}`).sort())
  await raw.leaseClient.leaseRevoke({ ID: ours[0]!.ID })

  await until(() => terms.every((t) => t.length === 2), 4 * lease, 'both elected again')
  expect(reasons).toEqual(['lost', 'lost'])
  for (const t of terms) expect(t[1]).toBeGreaterThan(t[0]!)
  const again = await raw.leaseClient.leaseTimeToLive({ ID: ours[0]!.ID })
  expect(Number(again.TTL)).toBe(-1)
})

it('never adopts a key another process holds under the same candidate id', async () => {
  const res = resource('same-id')
  const first = backend()
  const second = backend()
  const request = { resource: res, candidate: 'twin', tickets: 1, leaseMs: 2_000, metadata: null }
  const got = await first.acquire(request)
  expect(got.acquired).toBe(true)
  const other = await second.acquire(request)
  expect(other.acquired).toBe(false)
  // Nor may it release or renew the other's grant.
  await second.release({ resource: res, candidate: 'twin' })
  if (got.acquired) {
    expect(
      await second.renew([{ resource: res, candidate: 'twin', token: got.token, leaseMs: 2_000 }]),
    ).toEqual([false])
  }
  expect((await second.holders(res)).map((h) => h.candidate)).toEqual(['twin'])
  // Once the first is gone (close() revokes its lease), the second gets a newer grant.
  await first.close()
  const after = await second.acquire(request)
  expect(after.acquired && got.acquired && after.token > got.token).toBe(true)
})

it('updates metadata on a repeated acquire, keeping the token and the place', async () => {
  const res = resource('metadata')
  const b = backend()
  const base = { resource: res, candidate: 'm', tickets: 1, leaseMs: 2_000 }
  const first = await b.acquire({ ...base, metadata: { v: 1 } })
  const second = await b.acquire({ ...base, metadata: { v: 2 } })
  expect(first.acquired && second.acquired && first.token === second.token).toBe(true)
  expect((await b.holders(res)).map((h) => h.metadata)).toEqual([{ v: 2 }])
})

it('deletes a grant nobody renews after its lease, even while its lease is kept alive', async () => {
  const res = resource('stale')
  const b = backend()
  const keep = election(b, resource('keeps-lease-alive'), 2_000)
  await keep.campaign()
  const got = await b.acquire({
    resource: res,
    candidate: 'stale',
    tickets: 1,
    leaseMs: 2_000,
    metadata: null,
  })
  expect(got.acquired).toBe(true)
  await until(async () => (await b.holders(res)).length === 0, 5_000, 'the stale grant gone')
  expect(keep.isLeader).toBe(true)
})

it('works through a namespaced client: keys, renewals and wake-ups all under the namespace', async () => {
  const namespace = `ns-${randomBytes(4).toString('hex')}/`
  const client = new Etcd3({ hosts: server.endpoint })
  const b = etcdBackend({ client: client.namespace(namespace), prefix })
  const other = backend() // the same prefix without the namespace: a different queue
  try {
    const res = resource('namespaced')
    const request = { resource: res, candidate: 'n', tickets: 1, leaseMs: 2_000, metadata: null }
    let woken = 0
    const unwatch = await b.watch(res, () => woken++)
    const got = await b.acquire(request)
    if (!got.acquired) throw new Error('expected a grant')
    expect(await raw.get(`${namespace}${prefix}${res}#n`).string()).toContain('"tickets":1')
    expect((await other.acquire(request)).acquired).toBe(true)
    expect(
      await b.renew([{ resource: res, candidate: 'n', token: got.token, leaseMs: 2_000 }]),
    ).toEqual([true])
    await until(() => woken > 0, 5_000, 'the watch to see the put')
    await b.release({ resource: res, candidate: 'n', token: got.token })
    expect(await b.holders(res)).toEqual([])
    await unwatch()
  } finally {
    await b.close()
    client.close()
  }
})

describe('options', () => {
  const client = () => {
    const c = new Etcd3({ hosts: server.endpoint })
    clients.push(c)
    return c
  }
  const clients: Etcd3[] = []
  afterAll(() => clients.forEach((c) => c.close()))

  it.each([
    ['client', {}],
    ['client', { client: undefined }],
    ['hosts', { client: {}, hosts: 'x:1' }],
    ['client', { client: { kv: {} } }],
    ['hosts', { hosts: [] }],
    ['hosts', { hosts: 'no-port' }],
    ['hosts', { hosts: ['127.0.0.1:2379', 42] }],
    ['prefix', { hosts: '127.0.0.1:2379', prefix: 'has space' }],
    ['prefix', { hosts: '127.0.0.1:2379', prefix: 'x'.repeat(101) }],
    ['timeoutMs', { hosts: '127.0.0.1:2379', timeoutMs: 0 }],
    ['timeoutMs', { hosts: '127.0.0.1:2379', timeoutMs: 1.5 }],
    ['clientOptions', { hosts: '127.0.0.1:2379', clientOptions: 'x' }],
    ['clinet', { hosts: '127.0.0.1:2379', clinet: 1 }],
    ['options', null],
  ])('refuses a bad %s', (field, options) => {
    let error: unknown
    try {
      etcdBackend(options as never)
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(OptionsError)
    expect((error as OptionsError).field).toBe(field)
    expect((error as OptionsError).message).toMatch(/^Invalid /)
  })

  it('refuses clientOptions next to a client of your own', () => {
    expect(() => etcdBackend({ client: client(), clientOptions: {} })).toThrow(
      /applies only to the client made from hosts/,
    )
  })

  it.each([
    'redis://127.0.0.1:6379',
    'etcd://',
    'etcd://127.0.0.1',
    'etcd://127.0.0.1:2379,',
    'etcd://127.0.0.1:2379/path',
    'etcd://127.0.0.1:2379?nope=1',
    'etcd://127.0.0.1:2379?timeoutMs=abc',
    'etcd://127.0.0.1:2379?prefix=a%20b',
  ])('refuses the URL %s', async (url) => {
    await expect(backendFromUrl(url)).rejects.toBeInstanceOf(OptionsError)
  })

  it('reads hosts, prefix and timeout from a URL and works through it', async () => {
    const b = await backendFromUrl(
      `etcd://127.0.0.1:${server.port},127.0.0.1:${server.port}?prefix=${encodeURIComponent(prefix)}url/&timeoutMs=3000`,
    )
    backends.push(b)
    expect(b.prefix).toBe(`${prefix}url/`)
    const res = resource('url')
    const got = await b.acquire({
      resource: res,
      candidate: 'u',
      tickets: 1,
      leaseMs: 2_000,
      metadata: 7,
    })
    expect(got.acquired).toBe(true)
    expect(await raw.get(`${prefix}url/${res}#u`).string()).toBe(
      '{"tickets":1,"leaseMs":2000,"metadata":7}',
    )
  })

  it('checks each request and refuses calls after close()', async () => {
    const b = etcdBackend({ client: client(), prefix })
    await expect(
      b.acquire({ resource: 'ok', candidate: 'a b', tickets: 1, leaseMs: 1_000, metadata: null }),
    ).rejects.toMatchObject({ code: 'ERR_CONCLAVE_OPTIONS', field: 'candidate' })
    await expect(
      b.renew([{ resource: 'ok', candidate: 'a', token: 0, leaseMs: 1_000 }]),
    ).rejects.toMatchObject({ code: 'ERR_CONCLAVE_OPTIONS', field: 'token' })
    await b.close()
    await expect(b.holders('ok')).rejects.toMatchObject({ code: 'ERR_CONCLAVE_CLOSED' })
  })
})

it('a holder whose lease etcd revokes steps down before a waiter on another process is granted', async () => {
  // etcd itself may revoke a live lease: an operator's `etcdctl lease revoke`, or an old leader
  // that was stuck past a lease and revokes what it thinks expired when it resumes (etcd
  // #15247, fixed in 3.4.30 and 3.5.13). Both processes hear of it from their watches at about
  // the same moment; the holder must end its term on that event alone, since the waiter is
  // granted one round trip after it.
  const lease = 5_000
  const rounds = 12
  const overlaps: number[] = []
  for (let round = 0; round < rounds; round++) {
    const res = resource('revoked-race')
    const a = election(backend(), res, lease)
    const b = election(backend(), res, lease)
    const ta = await a.campaign()
    let holderAtGrant: boolean | undefined
    b.on('elected', () => (holderAtGrant = a.isLeader))
    const waiting = b.campaign()
    await until(async () => (await queuedKeys(raw, prefix, res)).length === 2, 5_000, 'b in line')
    const kv = (await raw.getAll().prefix(`${prefix}${res}#${a.id}`).exec()).kvs[0]!
    await raw.leaseClient.leaseRevoke({ ID: kv.lease })
    const tb = await waiting
    if (holderAtGrant) overlaps.push(round)
    await until(() => !ta.active, lease, 'the holder stepped down')
    expect(tb.token).toBeGreaterThan(ta.token)
    await Promise.all([a.close(), b.close()])
  }
  expect(overlaps).toEqual([])
}, 120_000)
