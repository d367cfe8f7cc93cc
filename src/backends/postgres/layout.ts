/**
 * Where the PostgreSQL backend keeps things: the SQL lives in real files under `sql/`, each
 * shipped as a generated module beside it (`<name>.sql.ts`, made by scripts/gen-assets.js, so a
 * bundler carries it along and nothing is read from disk at run time), and rendered for one
 * schema. A statement names the schema as `{schema}` and the NOTIFY channel as `{channel}`.
 */
import acquireSql from './sql/acquire.sql.js'
import holdersSql from './sql/holders.sql.js'
import migrateExistsSql from './sql/migrate-exists.sql.js'
import migrateLockSql from './sql/migrate-lock.sql.js'
import migratePrepareSql from './sql/migrate-prepare.sql.js'
import migrateRecordSql from './sql/migrate-record.sql.js'
import migrateVersionSql from './sql/migrate-version.sql.js'
import migrationIndex from './sql/migrations/index.js'
import releaseSql from './sql/release.sql.js'
import renewSql from './sql/renew.sql.js'
import waitersSql from './sql/waiters.sql.js'

/** The statements under `sql/` (migrations apart), by file name. */
const SQL = {
  'acquire.sql': acquireSql,
  'holders.sql': holdersSql,
  'migrate-exists.sql': migrateExistsSql,
  'migrate-lock.sql': migrateLockSql,
  'migrate-prepare.sql': migratePrepareSql,
  'migrate-record.sql': migrateRecordSql,
  'migrate-version.sql': migrateVersionSql,
  'release.sql': releaseSql,
  'renew.sql': renewSql,
  'waiters.sql': waitersSql,
} as const

/** The text of `sql/<name>`. */
export function sqlFile(name: keyof typeof SQL): string {
  return SQL[name]
}

/** One versioned migration: `sql/migrations/NNN_name.sql`. */
export interface Migration {
  version: number
  name: string
  /** Its SQL, before render(). */
  text: string
}

/** sql/migrations/NNN_name.sql, in version order (the generated sql/migrations/index.ts). */
export function migrations(): readonly Migration[] {
  return migrationIndex
}

/** A statement with the schema (quoted identifier) and the NOTIFY channel (literal) filled in. */
export function render(text: string, schema: string): string {
  // The schema was validated (lower-case letters, digits, _), so neither needs escaping.
  return text.replaceAll('{schema}', `"${schema}"`).replaceAll('{channel}', `'${channel(schema)}'`)
}

/** The NOTIFY channel of a schema: its payload is the resource whose holders changed. */
export function channel(schema: string): string {
  return `conclave:${schema}`
}

/** The statements of the operations, one each, rendered for one schema. */
export interface Statements {
  acquire: string
  renew: string
  release: string
  holders: string
  /** Backend.waiters: the live places in line (read-only). */
  waiters: string
}

/** Renders the operations' statements for `schema` (once per backend). */
export function statements(schema: string): Statements {
  return {
    acquire: render(sqlFile('acquire.sql'), schema),
    renew: render(sqlFile('renew.sql'), schema),
    release: render(sqlFile('release.sql'), schema),
    holders: render(sqlFile('holders.sql'), schema),
    waiters: render(sqlFile('waiters.sql'), schema),
  }
}
