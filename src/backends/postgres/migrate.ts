/**
 * Versioned migrations of the PostgreSQL backend's schema: `sql/migrations/NNN_name.sql`
 * (shipped as generated modules, listed in version order by sql/migrations/index.ts), run in one
 * transaction under a transaction advisory lock (so concurrent first uses serialise, and no
 * session state is needed: PgBouncer in transaction mode works), each recorded in the schema's
 * version table. A schema newer than this library is never touched.
 */
import type { Pool } from 'pg'
import { SchemaOldError, SchemaTooNewError } from '../../errors.js'
import { backendError, timeoutError, withDeadline } from '../kit.js'
import { migrations, render, sqlFile } from './layout.js'
import { checkMigrateOptions, type MigrateOptions } from './options.js'
import { ownPool, poolAddress, poolQuery, postgresLabel } from './pool.js'

/** What migrate() did. */
export interface MigrateResult {
  schema: string
  /** The version before (0: a fresh schema). */
  from: number
  /** The version now (this library's latest). */
  to: number
}

/** The lock class of migrations (the first key of pg_advisory_xact_lock(int, int)): "clav". */
const MIGRATION_LOCK_CLASS = 0x636c6176

/** The newest schema version this library knows. */
export function latestSchemaVersion(): number {
  return migrations().at(-1)?.version ?? 0
}

/**
 * What a backend does before its first statement: migrate `schema` (with `migrate: true`, the
 * default), or else check that it is at this library's version, failing with what to run.
 */
export async function prepareSchema(
  pool: Pool,
  schema: string,
  timeoutMs: number,
  autoMigrate: boolean,
): Promise<void> {
  if (autoMigrate) {
    await runMigrations(pool, schema, Math.max(timeoutMs, 30_000))
    return
  }
  const version = (await readVersion(pool, schema, timeoutMs)) ?? 0
  if (version > latestSchemaVersion()) throw tooNew(schema, version)
  if (version < latestSchemaVersion()) {
    throw new SchemaOldError(schema, version, latestSchemaVersion())
  }
}

/**
 * Brings `schema` up to this library's version (idempotent; safe to run from many processes at
 * once). Run it ahead of time, e.g. from a deploy step:
 *   node -e "import('conclave/postgres').then(m => m.migrate({ connectionString: process.env.DATABASE_URL }))"
 */
export async function migrate(options: MigrateOptions): Promise<MigrateResult> {
  const { schema, timeoutMs } = checkMigrateOptions(options)
  if (options.pool) return runMigrations(options.pool, schema, timeoutMs)
  const pool = ownPool(options.connectionString!, timeoutMs)
  try {
    return await runMigrations(pool, schema, timeoutMs)
  } finally {
    await pool.end().catch(() => undefined)
  }
}

function tooNew(schema: string, version: number): SchemaTooNewError {
  return new SchemaTooNewError(schema, version, latestSchemaVersion())
}

/** The schema's version without a lock: undefined when it has no version table yet. */
async function readVersion(
  pool: Pool,
  schema: string,
  timeoutMs: number,
): Promise<number | undefined> {
  const [exists] = await poolQuery<{ present: boolean }>(
    pool,
    sqlFile('migrate-exists.sql'),
    [schema],
    timeoutMs,
    'reading the schema version',
  )
  if (!exists?.present) return undefined
  const [row] = await poolQuery<{ version: number }>(
    pool,
    render(sqlFile('migrate-version.sql'), schema),
    [],
    timeoutMs,
    'reading the schema version',
  )
  return row?.version ?? 0
}

async function runMigrations(
  pool: Pool,
  schema: string,
  timeoutMs: number,
): Promise<MigrateResult> {
  const latest = latestSchemaVersion()
  const seen = await readVersion(pool, schema, timeoutMs)
  if (seen !== undefined && seen > latest) throw tooNew(schema, seen)
  if (seen === latest) return { schema, from: seen, to: latest }
  const work = async (): Promise<MigrateResult> => {
    const client = await pool.connect()
    // Every statement has its own read timeout, so this settles (and releases the connection)
    // even when the outer timeout has already failed the call.
    const q = (text: string, values: unknown[] = []) =>
      client.query<{ version: number }>({ text, values, query_timeout: timeoutMs } as {
        text: string
      })
    try {
      await q('BEGIN')
      // Serialises concurrent first uses: the second waits here and then finds nothing to do.
      await q(sqlFile('migrate-lock.sql'), [MIGRATION_LOCK_CLASS, schema])
      await q(render(sqlFile('migrate-prepare.sql'), schema))
      const from = (await q(render(sqlFile('migrate-version.sql'), schema))).rows[0]?.version ?? 0
      if (from > latest) throw tooNew(schema, from)
      for (const migration of migrations()) {
        if (migration.version <= from) continue
        await q(render(migration.text, schema))
        await q(render(sqlFile('migrate-record.sql'), schema), [migration.version, migration.name])
      }
      await q('COMMIT')
      client.release()
      return { schema, from, to: latest }
    } catch (error) {
      // Dropping the connection rolls the transaction back, whatever state it is in.
      client.release(error instanceof Error ? error : true)
      throw error
    }
  }
  const label = postgresLabel(poolAddress(pool))
  const what = `migrating schema "${schema}"`
  try {
    return await withDeadline(work(), timeoutMs, () => timeoutError(label, what, timeoutMs))
  } catch (error) {
    throw backendError(label, what, error)
  }
}
