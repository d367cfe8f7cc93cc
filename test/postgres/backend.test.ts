// The PostgreSQL backend's own rules: options, URLs, migrations (concurrent, too new), safety
// under concurrent acquires, one-statement renewal of 10,000 grants, tokens after data loss.
import { afterAll, describe, expect, it } from 'vitest'
import pg from 'pg'
import {
  backendFromUrl,
  latestSchemaVersion,
  migrate,
  postgresBackend,
  type PostgresBackend,
} from '../../src/backends/postgres/index.js'
import { backendFromUrl as cliBackendFromUrl } from '../../src/cli/backends.js'
import { migrations, render, sqlFile } from '../../src/backends/postgres/layout.js'
import { OptionsError } from '../../src/errors.js'
import { startPostgres } from '../../testkit/index.js'
import {
  exited,
  forkTs,
  type Message,
  nextMessage,
  uniqueSchema,
  until,
  withParam,
} from './helpers.js'

const server = await startPostgres()
const admin = new pg.Pool({ connectionString: server.connectionString, max: 4 })
admin.on('error', () => {})
const backends: PostgresBackend[] = []
const open = (options: Parameters<typeof postgresBackend>[0]) => {
  const b = postgresBackend(options)
  backends.push(b)
  return b
}

afterAll(async () => {
  await Promise.all(backends.map((b) => b.close()))
  await admin.end()
  await server.stop()
})

const schema = uniqueSchema('backend')
const req = (resource: string, candidate: string, tickets = 1, leaseMs = 30_000) => ({
  resource,
  candidate,
  tickets,
  leaseMs,
  metadata: null,
})

describe('options', () => {
  it('refuses bad options with the field, the value and the rule', () => {
    const cs = server.connectionString
    const cases: [unknown, string, RegExp][] = [
      [{}, 'connectionString', /Give a pg Pool as pool, or a connection string/],
      [{ connectionString: cs, schema: 'Bad-Name' }, 'schema', /"Bad-Name".*lower-case letters/],
      [{ connectionString: cs, schema: 'pg_mine' }, 'schema', /not with pg_/],
      [{ connectionString: cs, schema: 'a'.repeat(51) }, 'schema', /1 to 50 characters/],
      [{ connectionString: cs, schema: 'x"; DROP' }, 'schema', /lower-case/],
      [{ connectionString: cs, pool: admin }, 'pool', /either pool or connectionString/],
      [{ pool: {} }, 'pool', /must be a pg Pool/],
      [{ connectionString: cs, timeoutMs: 5 }, 'timeoutMs', /from 100 to/],
      [{ connectionString: cs, queryTimeoutMs: 500 }, 'queryTimeoutMs', /Use timeoutMs/],
      [{ connectionString: cs, pollMs: 1.5 }, 'pollMs', /integer/],
      [{ connectionString: cs, migrate: 'yes' }, 'migrate', /true or false/],
      [
        { connectionString: cs, schemas: 'x' },
        'schemas',
        /"schemas" is not a postgresBackend option\. Known options: pool/,
      ],
      [null, 'options', /takes \{ pool \} or \{ connectionString \}/],
    ]
    for (const [options, field, message] of cases) {
      let caught: unknown
      try {
        postgresBackend(options as Parameters<typeof postgresBackend>[0])
      } catch (error) {
        caught = error
      }
      expect(caught, JSON.stringify(options)).toBeInstanceOf(OptionsError)
      expect((caught as OptionsError).field).toBe(field)
      expect((caught as OptionsError).message).toMatch(message)
    }
  })

  it('reads postgres:// and postgresql:// URLs, taking ?schema= for itself', async () => {
    const urlSchema = uniqueSchema('url')
    for (const scheme of ['postgres:', 'postgresql:']) {
      const url = new URL(withParam(server.connectionString, 'schema', urlSchema))
      url.protocol = scheme
      const b = await backendFromUrl(url.toString())
      backends.push(b)
      expect(b.schema).toBe(urlSchema)
      // Connecting proves `schema` was taken off before pg saw the URL.
      const got = await b.acquire(req('url/test', `c-${scheme}`, 2))
      expect(got.acquired).toBe(true)
      // The CLI's table knows both schemes.
      const viaCli = await cliBackendFromUrl(url.toString())
      expect(viaCli.name).toBe('postgres')
      await viaCli.close()
    }
    await expect(backendFromUrl(`${server.connectionString}?schema=Nope`)).rejects.toThrow(
      /Invalid schema: "Nope"/,
    )
    await expect(backendFromUrl('mysql://x/y')).rejects.toBeInstanceOf(OptionsError)
  })

  it('uses a given pool without ending it, and refuses isolation levels it cannot be safe under', async () => {
    const pool = new pg.Pool({ connectionString: server.connectionString, max: 2 })
    pool.on('error', () => {})
    const b = postgresBackend({ pool, schema })
    expect((await b.acquire(req('pool/own', 'a'))).acquired).toBe(true)
    await b.close()
    expect((await pool.query('SELECT 1 AS one')).rows[0]).toEqual({ one: 1 })
    await pool.end()

    const serializable = new pg.Pool({
      connectionString: server.connectionString,
      options: '-c default_transaction_isolation=serializable',
      max: 1,
    })
    serializable.on('error', () => {})
    const s = postgresBackend({ pool: serializable, schema })
    await expect(s.acquire(req('pool/serializable', 'a'))).rejects.toThrow(
      /acquire needs READ COMMITTED, the session runs serializable/,
    )
    await s.close()
    await serializable.end()
  })
})

describe('close', () => {
  it('leaves no connection behind', async () => {
    const app = `conclave_close_${Date.now()}`
    const b = postgresBackend({
      connectionString: withParam(server.connectionString, 'application_name', app),
      schema,
    })
    await b.acquire(req('close/x', 'a'))
    const unwatch = await b.watch('close/x', () => {})
    const connections = async () =>
      Number(
        (
          await admin.query<{ n: string }>(
            'SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1',
            [app],
          )
        ).rows[0]!.n,
      )
    expect(await connections()).toBeGreaterThanOrEqual(2) // a pool connection and LISTEN
    await unwatch()
    await b.close()
    await until(async () => (await connections()) === 0, 10_000, 'all connections closed')
    await expect(b.holders('close/x')).rejects.toMatchObject({ code: 'ERR_CONCLAVE_CLOSED' })
  })
})

describe('migrations', () => {
  it('runs each migration exactly once when 4 processes migrate a fresh schema at once', async () => {
    const fresh = uniqueSchema('migrate')
    const children = Array.from({ length: 4 }, () =>
      forkTs('./migrate-worker.ts', { PG_URL: server.connectionString, PG_SCHEMA: fresh }),
    )
    try {
      await Promise.all(children.map((c) => nextMessage(c, 'ready')))
      const done = children.map((c) => nextMessage(c, 'done'))
      for (const c of children) c.send({ type: 'go' })
      const results = (await Promise.all(done)).map(
        (m: Message) => m.result as { from: number; to: number },
      )
      const latest = latestSchemaVersion()
      expect(latest).toBeGreaterThanOrEqual(1)
      // One process did the work; the others found it done after waiting for the lock.
      expect(results.filter((r) => r.from === 0)).toHaveLength(1)
      expect(results.filter((r) => r.from === latest)).toHaveLength(3)
      expect(results.every((r) => r.to === latest)).toBe(true)
      const rows = await admin.query<{ version: number; n: string }>(
        `SELECT version, count(*) AS n FROM "${fresh}".schema_version GROUP BY version ORDER BY version`,
      )
      expect(rows.rows.map((r) => [r.version, Number(r.n)])).toEqual(
        Array.from({ length: latest }, (_, i) => [i + 1, 1]),
      )
    } finally {
      for (const c of children) c.kill('SIGKILL')
      await Promise.all(children.map(exited))
    }
  })

  it('says clearly when the schema is newer than this library, and when migrate is off', async () => {
    const newer = uniqueSchema('newer')
    expect(await migrate({ connectionString: server.connectionString, schema: newer })).toEqual({
      schema: newer,
      from: 0,
      to: latestSchemaVersion(),
    })
    // Running it again is a no-op.
    expect(await migrate({ pool: admin, schema: newer })).toMatchObject({
      from: latestSchemaVersion(),
    })
    await admin.query(
      `INSERT INTO "${newer}".schema_version (version, name) VALUES (999, 'future')`,
    )
    const b = open({ connectionString: server.connectionString, schema: newer })
    await expect(b.acquire(req('newer/x', 'a'))).rejects.toMatchObject({
      code: 'ERR_CONCLAVE_SCHEMA_TOO_NEW',
    })
    await expect(b.acquire(req('newer/x', 'a'))).rejects.toThrow(
      /schema ".*" is at version 999, newer than this conclave knows/,
    )
    await expect(migrate({ pool: admin, schema: newer })).rejects.toMatchObject({
      code: 'ERR_CONCLAVE_SCHEMA_TOO_NEW',
    })

    const unmigrated = uniqueSchema('off')
    const off = open({
      connectionString: server.connectionString,
      schema: unmigrated,
      migrate: false,
    })
    await expect(off.holders('off/x')).rejects.toMatchObject({ code: 'ERR_CONCLAVE_SCHEMA_OLD' })
    await migrate({ pool: admin, schema: unmigrated })
    expect(await off.holders('off/x')).toEqual([])
    await expect(migrate({ pool: admin, schema: 'Upper' })).rejects.toBeInstanceOf(OptionsError)
  })
  // Migration 6 adds a six-argument acquire (the promotion grace's length) that must keep
  // migration 5's line; migration 5's five-argument one stays for a process of the older
  // conclave (its acquire.sql, below as it was) that runs on during the upgrade.
  it('upgrades a schema at version 5 in use: the older acquire goes on, both keep one line', async () => {
    const upgraded = uniqueSchema('upgrade')
    const client = await admin.connect()
    try {
      await client.query('BEGIN')
      await client.query(render(sqlFile('migrate-prepare.sql'), upgraded))
      for (const m of migrations().filter((m) => m.version <= 5)) {
        await client.query(render(m.text, upgraded))
        await client.query(render(sqlFile('migrate-record.sql'), upgraded), [m.version, m.name])
      }
      await client.query('COMMIT')
    } finally {
      client.release()
    }
    const olderAcquire = render(
      `SELECT a.granted, a.ahead FROM {schema}.acquire($1::text, $2::text, 1, 30000, 'null'::jsonb) a`,
      upgraded,
    )
    const older = async (candidate: string) =>
      (
        await admin.query<{ granted: boolean; ahead: number | null }>(olderAcquire, [
          'up/r',
          candidate,
        ])
      ).rows[0]
    expect(await older('a')).toEqual({ granted: true, ahead: null })
    expect(await older('b')).toEqual({ granted: false, ahead: 0 })

    expect(await migrate({ pool: admin, schema: upgraded })).toEqual({
      schema: upgraded,
      from: 5,
      to: latestSchemaVersion(),
    })
    const { rows } = await admin.query<{ args: number }>(
      `SELECT p.pronargs AS args FROM pg_proc p
         JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = $1 AND p.proname = 'acquire' ORDER BY p.pronargs`,
      [upgraded],
    )
    expect(rows.map((r) => r.args)).toEqual([5, 6, 7]) // its input arguments
    // The older release (three arguments) stays beside migration 7's.
    const releases = await admin.query<{ args: number }>(
      `SELECT p.pronargs AS args FROM pg_proc p
         JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = $1 AND p.proname = 'release' ORDER BY p.pronargs`,
      [upgraded],
    )
    expect(releases.rows.map((r) => r.args)).toEqual([3, 5])

    // The older process and this one stand in the same line, in the order they asked.
    expect(await older('c')).toEqual({ granted: false, ahead: 1 })
    const b = open({ connectionString: server.connectionString, schema: upgraded })
    expect(await b.acquire(req('up/r', 'd'))).toMatchObject({ acquired: false, ahead: 2 })
    expect(await b.acquire(req('up/r', 'b'))).toMatchObject({ acquired: false, ahead: 0 })
    await b.release({ resource: 'up/r', candidate: 'a' })
    // A ticket is free now: it goes to the first in line (b), not to a later asker, through
    // either acquire.
    expect(await b.acquire(req('up/r', 'd'))).toMatchObject({ acquired: false, ahead: 2 })
    expect(await older('c')).toEqual({ granted: false, ahead: 1 })
    expect(await b.acquire(req('up/r', 'b'))).toMatchObject({ acquired: true })
    expect(await b.acquire(req('up/r', 'd'))).toMatchObject({ acquired: false, ahead: 1 })
  })
})

describe('safety', () => {
  it('never grants more than `tickets` under concurrent acquires from many pools', async () => {
    const many = Array.from({ length: 8 }, () =>
      open({ connectionString: server.connectionString, schema }),
    )
    for (const tickets of [1, 2, 5]) {
      for (let round = 0; round < 5; round++) {
        const resource = `race/t${tickets}-r${round}`
        // 32 candidates at once, each through one of 8 pools; short leases so later rounds
        // also race over expired rows.
        const results = await Promise.all(
          Array.from({ length: 32 }, (_, i) =>
            many[i % many.length]!.acquire(req(resource, `c${i}`, tickets, 60_000)),
          ),
        )
        const winners = results.filter((r) => r.acquired)
        expect(winners).toHaveLength(tickets)
        const holders = await many[0]!.holders(resource)
        expect(holders).toHaveLength(tickets)
        const tokens = winners.map((w) => (w.acquired ? w.token : 0))
        expect(new Set(tokens).size).toBe(tickets)
      }
    }
  })

  it('treats expired rows as free and keeps tokens growing after the rows are lost', async () => {
    const b = open({ connectionString: server.connectionString, schema })
    const first = await b.acquire(req('loss/x', 'a', 1, 50))
    if (!first.acquired) throw new Error('expected a grant')
    await new Promise((r) => setTimeout(r, 120))
    const second = await b.acquire(req('loss/x', 'b', 1, 30_000))
    if (!second.acquired) throw new Error('expected the expired grant to be free')
    expect(second.token).toBeGreaterThan(first.token)
    // The expired row was cleaned, not only skipped.
    const rows = await admin.query(
      `SELECT candidate FROM "${schema}".grants WHERE resource = 'loss/x'`,
    )
    expect(rows.rows).toEqual([{ candidate: 'b' }])
    // As after a restore from a backup taken before these grants: every row of the resource
    // gone. The database clock keeps the next token above the old ones.
    await admin.query(`DELETE FROM "${schema}".grants WHERE resource = 'loss/x'`)
    await admin.query(`DELETE FROM "${schema}".resources WHERE resource = 'loss/x'`)
    const third = await b.acquire(req('loss/x', 'c'))
    if (!third.acquired) throw new Error('expected a grant')
    expect(third.token).toBeGreaterThan(second.token)
  })

  it('renews 10,000 grants in one statement', async () => {
    const counted = new pg.Pool({ connectionString: server.connectionString, max: 2 })
    counted.on('error', () => {})
    const statements: string[] = []
    const query = counted.query.bind(counted) as (...args: unknown[]) => unknown
    ;(counted as unknown as { query: unknown }).query = (...args: unknown[]) => {
      const config = args[0] as string | { text: string }
      statements.push(typeof config === 'string' ? config : config.text)
      return query(...args)
    }
    const b = postgresBackend({ pool: counted, schema })
    await b.holders('bulk/warmup') // migrations and the version check happen here
    const n = 10_000
    // The grants are made by SQL for speed (10,000 acquires would take a while): one per
    // resource, as 10,000 elections would hold them.
    const made = await admin.query<{ resource: string; token: string }>(
      `INSERT INTO "${schema}".grants (resource, candidate, token, expires_at, metadata)
       SELECT 'bulk/r' || i, 'holder', i, clock_timestamp() + interval '30 seconds', 'null'
         FROM generate_series(1, $1::int) AS i
       RETURNING resource, token`,
      [n],
    )
    const requests = made.rows.map((r) => ({
      resource: r.resource,
      candidate: 'holder',
      token: Number(r.token),
      leaseMs: 60_000,
    }))
    // Every third asks with a wrong token: those must come back false.
    for (let i = 0; i < n; i += 3) requests[i] = { ...requests[i]!, token: requests[i]!.token + n }
    statements.length = 0
    const results = await b.renew(requests)
    expect(statements).toHaveLength(1)
    expect(results).toHaveLength(n)
    expect(results.every((ok, i) => ok === (i % 3 !== 0))).toBe(true)
    const extended = await admin.query<{ n: string }>(
      `SELECT count(*) AS n FROM "${schema}".grants
        WHERE resource LIKE 'bulk/r%' AND expires_at > clock_timestamp() + interval '40 seconds'`,
    )
    expect(Number(extended.rows[0]!.n)).toBe(n - Math.ceil(n / 3))
    await b.close()
    await counted.end()
  })
})
