import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { OptionsError } from '../../src/errors.js'
import { fencedUpdate, fencedUpdateSql, StaleTokenError } from '../../src/fence/index.js'
import { startPostgres, type PostgresServer } from '../../testkit/index.js'

let server: PostgresServer
let pool: pg.Pool

beforeAll(async () => {
  server = await startPostgres()
  pool = new pg.Pool({ connectionString: server.connectionString, max: 4 })
  // pool.end() resolves before its idle clients' sockets close; the server's fast shutdown in
  // afterAll may then reach one of them, and an idle client's error with no listener throws.
  pool.on('error', () => {})
  await pool.query(`CREATE SCHEMA app`)
  await pool.query(
    `CREATE TABLE app.jobs (id text PRIMARY KEY, state text, token bigint NOT NULL DEFAULT 0)`,
  )
  await pool.query(`INSERT INTO app.jobs (id, state) VALUES ('a', 'new'), ('b', 'new')`)
})
afterAll(async () => {
  await pool?.end()
  await server?.stop()
})

describe('fencedUpdate (PostgreSQL)', () => {
  it('updates with a token >= the stored one and refuses a smaller one', async () => {
    expect(
      await fencedUpdate(pool, { table: 'app.jobs', id: 'a', token: 5, set: { state: 'x' } }),
    ).toBe(1)
    expect(
      await fencedUpdate(pool, { table: 'app.jobs', id: 'a', token: 5, set: { state: 'y' } }),
    ).toBe(1)
    const stale = await fencedUpdate(pool, {
      table: 'app.jobs',
      id: 'a',
      token: 4,
      set: { state: 'stale' },
    }).catch((e: unknown) => e)
    expect(stale).toBeInstanceOf(StaleTokenError)
    expect(stale).toMatchObject({ code: 'ERR_CONCLAVE_STALE_TOKEN', token: 4, highest: 5 })
    const { rows } = await pool.query(
      `SELECT state, token::int AS token FROM app.jobs WHERE id = 'a'`,
    )
    expect(rows).toEqual([{ state: 'y', token: 5 }])
  })

  it('resolves 0 for a missing row', async () => {
    expect(
      await fencedUpdate(pool, { table: 'app.jobs', id: 'nope', token: 9, set: { state: 'x' } }),
    ).toBe(0)
  })

  it('refuses a missing or unusable id with an OptionsError naming it, writing nothing', async () => {
    const bad: unknown[] = [undefined, null, '', Number.NaN, Infinity, {}, ['a'], () => 'a']
    for (const id of bad) {
      const error = await fencedUpdate(pool, {
        table: 'app.jobs',
        token: 99,
        set: { state: 'never' },
        ...(id === undefined ? {} : { id }),
      } as Parameters<typeof fencedUpdate>[1]).catch((e: unknown) => e)
      expect(error, String(id)).toBeInstanceOf(OptionsError)
      expect(error, String(id)).toMatchObject({ code: 'ERR_CONCLAVE_OPTIONS', field: 'id' })
      expect((error as Error).message).toMatch(/^Invalid id: .* id is the key of the row/)
    }
    const { rows } = await pool.query(
      `SELECT count(*)::int AS n FROM app.jobs WHERE state = 'never'`,
    )
    expect(rows).toEqual([{ n: 0 }])
    // Keys of other types still work.
    await pool.query(
      `CREATE TABLE app.counters (id bigint PRIMARY KEY, n int, token bigint NOT NULL DEFAULT 0)`,
    )
    await pool.query(`INSERT INTO app.counters (id, n) VALUES (1, 0)`)
    expect(
      await fencedUpdate(pool, { table: 'app.counters', id: 1, token: 3, set: { n: 1 } }),
    ).toBe(1)
    expect(
      await fencedUpdate(pool, { table: 'app.counters', id: 1n, token: 3, set: { n: 2 } }),
    ).toBe(1)
  })

  it('orders concurrent writers on the row lock: the highest token wins, stale ones are refused', async () => {
    // A paused leader (token 7) holds its transaction open; the newer leader (8) waits on the
    // row lock, then writes; the old one then tries again with 7 and is refused.
    const old = await pool.connect()
    try {
      await old.query('BEGIN')
      expect(
        await fencedUpdate(old, { table: 'app.jobs', id: 'b', token: 7, set: { state: 'old' } }),
      ).toBe(1)
      const newer = fencedUpdate(pool, {
        table: 'app.jobs',
        id: 'b',
        token: 8,
        set: { state: 'new' },
      })
      await new Promise((resolve) => setTimeout(resolve, 100))
      await old.query('COMMIT')
      expect(await newer).toBe(1)
      await expect(
        fencedUpdate(old, { table: 'app.jobs', id: 'b', token: 7, set: { state: 'late' } }),
      ).rejects.toMatchObject({ token: 7, highest: 8 })
    } finally {
      old.release()
    }
    const { rows } = await pool.query(`SELECT state FROM app.jobs WHERE id = 'b'`)
    expect(rows).toEqual([{ state: 'new' }])
  })

  it('builds one statement with quoted identifiers and refuses unsafe ones', () => {
    expect(fencedUpdateSql({ table: 'app.jobs', set: { state: 1, owner: 2 } })).toBe(
      'UPDATE "app"."jobs" SET "state" = $3, "owner" = $4, "token" = $2 WHERE "id" = $1 AND "token" <= $2',
    )
    expect(() => fencedUpdateSql({ table: 'jobs; DROP TABLE x', set: { a: 1 } })).toThrow(
      /Invalid table/,
    )
    expect(() => fencedUpdateSql({ table: 'jobs', set: { token: 1 } })).toThrow(/token column/)
    expect(() => fencedUpdateSql({ table: 'jobs', set: {} })).toThrow(/at least one column/)
  })
})
