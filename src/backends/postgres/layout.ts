/**
 * Where the PostgreSQL backend keeps things: the SQL lives in real files under `sql/` (next to
 * this module in src/ and, copied by the build, in dist/), each read once and rendered for one
 * schema. A statement names the schema as `{schema}` and the NOTIFY channel as `{channel}`.
 */
import { readdirSync, readFileSync } from 'node:fs'

const sqlCache = new Map<string, string>()

/** The text of `sql/<name>`, read once per process. */
export function sqlFile(name: string): string {
  let text = sqlCache.get(name)
  if (text === undefined) {
    text = readFileSync(new URL(`./sql/${name}`, import.meta.url), 'utf8')
    sqlCache.set(name, text)
  }
  return text
}

/** One versioned migration: `sql/migrations/NNN_name.sql`. */
export interface Migration {
  version: number
  name: string
  /** Its path under `sql/`, for sqlFile(). */
  file: string
}

let migrationList: Migration[] | undefined

/** sql/migrations/NNN_name.sql, in version order (listed once per process). */
export function migrations(): Migration[] {
  migrationList ??= readdirSync(new URL('./sql/migrations/', import.meta.url))
    .map((file) => /^(\d+)_([a-z0-9_]+)\.sql$/.exec(file))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ version: Number(m[1]), name: m[2]!, file: `migrations/${m[0]}` }))
    .sort((a, b) => a.version - b.version)
  return migrationList
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

/** The statements of the four operations, one each, rendered for one schema. */
export interface Statements {
  acquire: string
  renew: string
  release: string
  holders: string
}

/** Renders the operations' statements for `schema` (once per backend). */
export function statements(schema: string): Statements {
  return {
    acquire: render(sqlFile('acquire.sql'), schema),
    renew: render(sqlFile('renew.sql'), schema),
    release: render(sqlFile('release.sql'), schema),
    holders: render(sqlFile('holders.sql'), schema),
  }
}
