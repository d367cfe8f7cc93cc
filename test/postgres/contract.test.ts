// The PostgreSQL backend and the contract of issue 11: close() runs the onClose hooks before it
// stops LISTEN or ends its pool, a resource's tickets are fixed while its grants live, and errors
// that say what went wrong.
import { afterAll, describe, expect, it } from 'vitest'
import pg from 'pg'
import type { AcquireRequest } from '../../src/backend.js'
import { postgresBackend, type PostgresBackend } from '../../src/backends/postgres/index.js'
import { Election } from '../../src/election.js'
import { BackendClosedError } from '../../src/errors.js'
import { startPostgres } from '../servers/index.js'
import { sleep, uniqueSchema, until, withParam } from './helpers.js'

const server = await startPostgres()
const admin = new pg.Pool({ connectionString: server.connectionString, max: 4 })
admin.on('error', () => {})
const backends: PostgresBackend[] = []
const schema = uniqueSchema('contract')
const open = (options: Partial<Parameters<typeof postgresBackend>[0]> = {}) => {
  const b = postgresBackend({ connectionString: server.connectionString, schema, ...options })
  backends.push(b)
  return b
}

afterAll(async () => {
  await Promise.all(backends.map((b) => b.close()))
  await admin.end()
  await server.stop()
})

const req = (
  resource: string,
  candidate: string,
  tickets = 1,
  leaseMs = 30_000,
): AcquireRequest => ({
  resource,
  candidate,
  tickets,
  leaseMs,
  metadata: null,
})

async function connections(app: string): Promise<number> {
  const { rows } = await admin.query<{ n: string }>(
    'SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1',
    [app],
  )
  return Number(rows[0]!.n)
}

describe('close', () => {
  it('awaits every onClose hook while calls still work, then ends its pool and refuses every call as closed', async () => {
    const app = `conclave_hooks_${Date.now()}`
    const b = open({
      connectionString: withParam(server.connectionString, 'application_name', app),
    })
    const other = open()
    const resource = 'close/hooks'
    const got = await b.acquire(req(resource, 'a'))
    if (!got.acquired) throw new Error('expected a grant')
    await b.watch(resource, () => {}) // the LISTEN connection, which close() must end
    expect((await other.acquire(req(resource, 'b'))).acquired).toBe(false)

    const order: string[] = []
    let letGo!: () => void
    const held = new Promise<void>((resolve) => (letGo = resolve))
    b.onClose(async () => {
      order.push('hook')
      await held
      // Nothing is given up yet: the pool answers, LISTEN is up.
      expect(b.listening).toBe(true)
      expect((await b.holders(resource)).map((h) => h.candidate)).toEqual(['a'])
      await b.release({ resource, candidate: 'a', token: got.token })
      order.push('released')
    })
    const removed = b.onClose(async () => void order.push('a removed hook ran'))
    removed()
    b.onClose(async () => {
      throw new Error('a failing hook does not keep the backend open')
    })
    let closed = false
    const closing = b.close()
    void closing.then(() => (closed = true))
    await sleep(100)
    expect(closed).toBe(false) // still waiting for the first hook
    letGo()
    await closing
    expect(order).toEqual(['hook', 'released'])
    expect(b.close()).toBe(closing) // idempotent: the same promise
    expect((await other.acquire(req(resource, 'b'))).acquired).toBe(true)
    await until(async () => (await connections(app)) === 0, 10_000, 'all connections closed')

    const calls: [string, () => Promise<unknown>][] = [
      ['acquire', () => b.acquire(req(resource, 'a'))],
      ['renew', () => b.renew([{ resource, candidate: 'a', token: got.token, leaseMs: 1_000 }])],
      ['release', () => b.release({ resource, candidate: 'a' })],
      ['holders', () => b.holders(resource)],
      ['watch', () => b.watch(resource, () => {})],
    ]
    for (const [name, call] of calls) {
      const error = await call().then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(error, name).toBeInstanceOf(BackendClosedError)
      expect(error, name).toMatchObject({ code: 'ERR_CONCLAVE_CLOSED' })
    }
  })

  it('lets a holder end its term and hand over before the pool ends', async () => {
    const first = open()
    const resource = 'close/handover'
    const errors: Error[] = []
    const a = new Election(first, resource, { leaseMs: 30_000 })
    const b = new Election(open(), resource, { leaseMs: 30_000 })
    for (const e of [a, b]) e.on('error', (error) => errors.push(error))
    first.onClose(() => a.close()) // what the election core registers
    const ta = await a.campaign()
    let aEndedAt: number | undefined
    ta.signal.addEventListener('abort', () => (aEndedAt = performance.now()))
    let bElectedAt: number | undefined
    const bTerm = b.campaign().then((term) => ((bElectedAt = performance.now()), term))
    await sleep(200)
    expect(b.isLeader).toBe(false)
    await first.close()
    expect(ta.endReason).toBe('closed')
    // With a 30 s lease, B gets the grant this soon only because A released it in the hook.
    const tb = await bTerm
    expect(bElectedAt!).toBeGreaterThanOrEqual(aEndedAt!)
    expect(tb.token).toBeGreaterThan(ta.token)
    await b.close()
    expect(errors.map((e) => e.message)).toEqual([])
  })
})
