// The PostgreSQL backend and the contract of issue 11: close() runs the onClose hooks before it
// stops LISTEN or ends its pool, a resource's tickets are fixed while its grants live, and errors
// that say what went wrong.
import { readFileSync } from 'node:fs'
import { type AddressInfo, createServer } from 'node:net'
import { afterAll, describe, expect, it } from 'vitest'
import pg from 'pg'
import type { AcquireRequest } from '../../src/backend.js'
import {
  backendFromUrl,
  latestSchemaVersion,
  postgresBackend,
  type PostgresBackend,
} from '../../src/backends/postgres/index.js'
import { Election } from '../../src/election.js'
import {
  BackendClosedError,
  BackendError,
  OptionsError,
  TicketsMismatchError,
} from '../../src/errors.js'
import { freePort, startPostgres } from '../../testkit/index.js'
import { runWithoutPeers, sleep, uniqueSchema, until, withParam } from './helpers.js'

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

describe('tickets', () => {
  it('refuses a candidate asking other tickets while the grants live, and accepts any once none does', async () => {
    const b = open()
    const resource = 'tickets/mismatch'
    const three = await Promise.all(['a', 'b', 'c'].map((c) => b.acquire(req(resource, c, 3))))
    expect(three.every((r) => r.acquired)).toBe(true)
    const refused = await b.acquire(req(resource, 'd', 5)).catch((e: unknown) => e)
    expect(refused).toBeInstanceOf(TicketsMismatchError)
    expect(refused).toMatchObject({
      code: 'ERR_CONCLAVE_TICKETS_MISMATCH',
      resource,
      tickets: 5,
      held: 3,
    })
    expect((await b.holders(resource)).map((h) => h.candidate).sort()).toEqual(['a', 'b', 'c'])
    // A holder asking again with other tickets is refused too, and keeps its grant.
    await expect(b.acquire(req(resource, 'a', 1))).rejects.toBeInstanceOf(TicketsMismatchError)
    expect(await b.holders(resource)).toHaveLength(3)
    // The same tickets still queue as before.
    expect((await b.acquire(req(resource, 'd', 3))).acquired).toBe(false)

    for (const [i, c] of ['a', 'b', 'c'].entries()) {
      const r = three[i]!
      if (r.acquired) await b.release({ resource, candidate: c, token: r.token })
    }
    const five = await b.acquire(req(resource, 'd', 5))
    expect(five.acquired).toBe(true)
    await expect(b.acquire(req(resource, 'a', 3))).rejects.toMatchObject({ held: 5 })

    // Expired grants do not count: a short grant with tickets 1, then tickets 2 once it expired.
    const expiring = 'tickets/expired'
    expect((await b.acquire(req(expiring, 'x', 1, 50))).acquired).toBe(true)
    await sleep(150)
    expect((await b.acquire(req(expiring, 'y', 2))).acquired).toBe(true)
  })

  it('never lets concurrent acquires with different tickets both win', async () => {
    const pools = Array.from({ length: 6 }, () => open())
    for (let round = 0; round < 12; round++) {
      const resource = `tickets/race-${round}`
      // 24 candidates at once through 6 pools, asking 1 or 3 tickets, interleaved.
      const asks = Array.from({ length: 24 }, (_, i) => (i % 2 === round % 2 ? 1 : 3))
      const results = await Promise.all(
        asks.map((tickets, i) =>
          pools[i % pools.length]!.acquire(req(resource, `c${i}`, tickets)).then(
            (r) => ({ tickets, r }),
            (e: unknown) => ({ tickets, e }),
          ),
        ),
      )
      const won = results.filter((x) => 'r' in x && x.r.acquired)
      const winner = won[0]!.tickets
      expect(new Set(won.map((x) => x.tickets))).toEqual(new Set([winner]))
      expect(won).toHaveLength(winner)
      for (const x of results) {
        if ('e' in x) {
          expect(x.e).toBeInstanceOf(TicketsMismatchError)
          expect(x.tickets).not.toBe(winner)
        } else if (!x.r.acquired) expect(x.tickets).toBe(winner)
      }
      expect(results.filter((x) => x.tickets !== winner).every((x) => 'e' in x)).toBe(true)
      expect(await pools[0]!.holders(resource)).toHaveLength(winner)
    }
  })

  it('migrates a version 1 schema with live grants: they keep working, unchecked until renewed by an acquire', async () => {
    const old = uniqueSchema('v1')
    const sql = (file: string) =>
      readFileSync(new URL(`../../src/backends/postgres/sql/${file}`, import.meta.url), 'utf8')
        .replaceAll('{schema}', `"${old}"`)
        .replaceAll('{channel}', `'conclave:${old}'`)
    // What migrate() made before this version: migration 1 only.
    await admin.query(sql('migrate-prepare.sql'))
    await admin.query(sql('migrations/001_initial.sql'))
    await admin.query(sql('migrate-record.sql'), [1, 'initial'])
    await admin.query(`SELECT * FROM "${old}".acquire('up/x', 'legacy', 2, 30000, 'null')`)

    const b = open({ schema: old })
    const [legacy] = await b.holders('up/x') // the first call migrates
    expect(legacy).toMatchObject({ candidate: 'legacy' })
    const { rows } = await admin.query<{ version: number }>(
      `SELECT max(version) AS version FROM "${old}".schema_version`,
    )
    expect(rows[0]!.version).toBe(latestSchemaVersion())
    expect(latestSchemaVersion()).toBeGreaterThanOrEqual(2)
    expect(
      await b.renew([
        { resource: 'up/x', candidate: 'legacy', token: legacy!.token, leaseMs: 30_000 },
      ]),
    ).toEqual([true])
    // Its tickets were not recorded, so they are not held against anyone...
    expect((await b.acquire(req('up/x', 'new', 3))).acquired).toBe(true)
    // ...but the new grant's are.
    await expect(b.acquire(req('up/x', 'other', 2))).rejects.toMatchObject({ held: 3 })
  })
})

describe('errors', () => {
  const refused = async (b: PostgresBackend) => b.holders('errors/x').catch((e: unknown) => e)

  it('names host:port of a server it cannot reach and keeps the real error as cause, never the password', async () => {
    const port = await freePort() // nothing listens there
    const b = open({ connectionString: `postgres://app:s3cret@127.0.0.1:${port}/db` })
    const error = await refused(b)
    expect(error).toBeInstanceOf(BackendError)
    expect(error).toMatchObject({ code: 'ERR_CONCLAVE_BACKEND' })
    expect((error as Error).message).toContain(`postgres at 127.0.0.1:${port}:`)
    expect((error as Error).message).not.toContain('s3cret')
    expect((error as Error).cause).toBeInstanceOf(Error)
    expect((error as { cause: { code?: string } }).cause.code).toBe('ECONNREFUSED')
  })

  it('names host:port when the port is something else than PostgreSQL', async () => {
    // A server that hangs up at once, as many a wrong port does (pg then only says "Connection
    // terminated unexpectedly", with no address).
    const other = createServer((socket) => socket.destroy())
    await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve))
    const { port } = other.address() as AddressInfo
    try {
      const b = open({ connectionString: `postgres://app:s3cret@127.0.0.1:${port}/db` })
      const error = await refused(b)
      expect(error).toBeInstanceOf(BackendError)
      expect((error as Error).message).toMatch(
        new RegExp(`^postgres at 127\\.0\\.0\\.1:${port}: .*failed: .*terminated`, 'i'),
      )
      expect((error as Error).cause).toBeInstanceOf(Error)
      // The LISTEN connection says where, too.
      const watching = await b.watch('errors/x', () => {}).catch((e: unknown) => e)
      expect((watching as Error).message).toContain(`postgres at 127.0.0.1:${port}:`)
      expect((watching as Error).cause).toBeInstanceOf(Error)
    } finally {
      other.close()
    }
  })

  it('never echoes a password of a URL or connection string in a message', async () => {
    const cases: [() => Promise<unknown>, RegExp][] = [
      [() => backendFromUrl('postgres://app:s3cret@[bad-host/db'), /app:\*\*\*@/],
      [() => backendFromUrl('mysql://app:s3cret@db/x'), /mysql:\/\/app:\*\*\*@db\/x/],
      [() => backendFromUrl('postgres://db/x?password=s3cret&schema=Bad'), /Invalid schema/],
      [
        () => backendFromUrl('postgres://app:s3cret@db/x?passwd=s3cret'),
        /Invalid passwd: "\*\*\*"/,
      ],
      [
        async () =>
          postgresBackend({ pool: admin, connectionString: 'postgres://app:s3cret@db/x' }),
        /either pool or connectionString/,
      ],
      [
        async () =>
          postgresBackend({ connectionString: 'postgres://db/x', password: 's3cret' } as never),
        /Invalid password: "\*\*\*"\. "password" is not a postgresBackend option/,
      ],
    ]
    for (const [make, message] of cases) {
      const error = await make().then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(error).toBeInstanceOf(OptionsError)
      expect((error as Error).message).toMatch(message)
      expect((error as Error).message).not.toContain('s3cret')
      expect(JSON.stringify((error as OptionsError).value)).not.toContain('s3cret')
    }
    await expect(backendFromUrl('mysql://db/x?password=s3cret')).rejects.toThrow(
      /"mysql:\/\/db\/x\?password=\*\*\*"/,
    )
  })

  it('refuses an unknown URL parameter, naming it, its value and the known ones', async () => {
    for (const [name, value] of [
      ['schem', 'leases'],
      ['connect_timeout', '5'],
    ]) {
      const error = await backendFromUrl(withParam(server.connectionString, name!, value!)).catch(
        (e: unknown) => e,
      )
      expect(error).toBeInstanceOf(OptionsError)
      expect(error).toMatchObject({ field: name, value })
      expect((error as Error).message).toMatch(
        new RegExp(`^Invalid ${name}: "${value}". .*Known: schema .*application_name`),
      )
    }
    // pg's own parameters still reach pg.
    const app = `conclave_url_${Date.now()}`
    const b = await backendFromUrl(
      withParam(withParam(server.connectionString, 'application_name', app), 'schema', schema),
    )
    backends.push(b)
    await b.holders('errors/x')
    expect(await connections(app)).toBeGreaterThanOrEqual(1)
  })

  it('takes maxLeaseMs from the URL (default 60 s) and refuses a lease longer than it, naming leaseMs', async () => {
    const byDefault = postgresBackend({ connectionString: server.connectionString, schema })
    backends.push(byDefault)
    expect(byDefault.maxLeaseMs).toBe(60_000)
    const b = await backendFromUrl(
      withParam(withParam(server.connectionString, 'maxLeaseMs', '2000'), 'schema', schema),
    )
    backends.push(b)
    expect(b.maxLeaseMs).toBe(2_000)
    const ask = { resource: 'errors/long', candidate: 'c', tickets: 1, metadata: null }
    await expect(b.acquire({ ...ask, leaseMs: 2_001 })).rejects.toMatchObject({
      field: 'leaseMs',
      value: 2_001,
    })
    await expect(
      b.renew([{ resource: 'errors/long', candidate: 'c', token: 1, leaseMs: 2_001 }]),
    ).rejects.toMatchObject({ field: 'leaseMs' })
    expect((await b.acquire({ ...ask, leaseMs: 2_000 })).acquired).toBe(true)
    for (const value of ['1m', '5']) {
      const error = await backendFromUrl(
        withParam(server.connectionString, 'maxLeaseMs', value),
      ).catch((e: unknown) => e)
      expect(error).toMatchObject({ field: 'maxLeaseMs' })
    }
    expect(() =>
      postgresBackend({ connectionString: server.connectionString, maxLeaseMs: 0 }),
    ).toThrow(OptionsError)
  })

  it('fails at once with a MissingPeerError when pg is not installed', async () => {
    const out = await runWithoutPeers(`
      const seen = (e) => ({ name: e?.name, code: e?.code, peer: e?.peer, message: e?.message })
      const out = {}
      out.pg = await import('pg').then(() => 'resolvable', () => 'missing')
      const { postgresBackend, backendFromUrl, migrate } = await import('./src/backends/postgres/index.js')
      const url = 'postgres://app@127.0.0.1:1/db'
      try { postgresBackend({ connectionString: url }); out.factory = 'made' } catch (e) { out.factory = seen(e) }
      out.url = await backendFromUrl(url).then(() => 'made', seen)
      out.migrate = await migrate({ connectionString: url }).then(() => 'done', seen)
      // With a pool of your own, pg is never loaded.
      const pool = { query: async () => ({ rows: [] }), connect: async () => { throw new Error('no') } }
      out.pool = (() => { try { return postgresBackend({ pool }).name } catch (e) { return seen(e) } })()
      console.log(JSON.stringify(out))
    `)
    expect(out.pg).toBe('missing')
    const missing = {
      name: 'MissingPeerError',
      code: 'ERR_CONCLAVE_MISSING_PEER',
      peer: 'pg',
      message: expect.stringContaining('npm install pg') as unknown,
    }
    expect(out.factory).toEqual(missing)
    expect(out.url).toEqual(missing)
    expect(out.migrate).toEqual(missing)
    expect(out.pool).toBe('postgres')
  })
})
