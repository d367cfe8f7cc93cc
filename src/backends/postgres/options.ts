/**
 * Options of the PostgreSQL backend and of migrate(): what they are, their defaults, the rules
 * they must follow (checked up front, so a typo never falls back to a default), and the backend
 * URL, which is parsed here into the same options.
 */
import type { ClientConfig, Pool } from 'pg'
import { OptionsError } from '../../errors.js'
import {
  checkMaxLeaseMs,
  checkOptions,
  optionalMilliseconds,
  renamedOption,
  shownValue,
} from '../../validate.js'
import { redactUrl } from '../kit.js'

/** What postgresBackend() takes: where the pool comes from, the schema, and the timings. */
export interface PostgresBackendOptions {
  /** Your `pg` Pool. The backend uses it and never ends it. Give this or `connectionString`. */
  pool?: Pool
  /** Or a connection string: the backend makes its own pool (and ends it on close()). */
  connectionString?: string
  /** The schema holding conclave's tables (made by the migrations). Default `conclave`. */
  schema?: string
  /**
   * Connection settings of the one dedicated LISTEN connection. Default: the pool's own
   * settings. Point it at the server directly when the pool goes through PgBouncer in
   * transaction mode (which cannot carry LISTEN).
   */
  listen?: ClientConfig
  /**
   * A call that has no answer after this many ms fails (and its connection is dropped), so a
   * dead connection fails the call instead of hanging it. Default 10000.
   */
  timeoutMs?: number
  /** While the LISTEN connection is down, watchers are woken this often. Default 3000. */
  pollMs?: number
  /** How often the LISTEN connection is checked with `SELECT 1` (finds a hung path). Default 10000. */
  heartbeatMs?: number
  /** Run pending migrations on first use (default true). With false, an old schema is an error. */
  migrate?: boolean
  /**
   * `synchronous_commit` for the commits of grants and renewals (set per statement, so any
   * pool works): `'remote_apply'` makes each wait until a synchronous standby (the server's
   * `synchronous_standby_names`) has applied it, so a promoted standby has every grant and
   * renewal a holder was told about. With no standby answering, the call fails after
   * `timeoutMs` (the grant may then stand on the primary, like any call whose answer was lost).
   * Default: the session's setting.
   */
  synchronousCommit?: SynchronousCommit
  /**
   * The longest lease any candidate of this database uses: the same on every candidate's
   * backend. After a promotion (a new WAL timeline) nothing new is granted for this long,
   * whatever lease the asking candidate has, because the grant the promoted standby missed may
   * be another candidate's longer one; an acquire or renewal with a longer lease is refused (an
   * OptionsError). In a URL: `?maxLeaseMs=`. Default 60000.
   */
  maxLeaseMs?: number
}

/**
 * PostgreSQL's synchronous_commit levels conclave accepts for grants and renewals. Not `off`:
 * a crash could then lose grants already answered, and a restart on the same timeline has no
 * grace to cover them.
 */
export type SynchronousCommit = 'remote_apply' | 'on' | 'remote_write' | 'local'

/** The levels synchronousCommit takes. */
export const SYNCHRONOUS_COMMIT_LEVELS: readonly SynchronousCommit[] = [
  'remote_apply',
  'on',
  'remote_write',
  'local',
]

/** synchronousCommit checked: a level, or undefined for the session's own. */
export function validateSynchronousCommit(value: unknown): SynchronousCommit | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'string' || !(SYNCHRONOUS_COMMIT_LEVELS as string[]).includes(value)) {
    throw new OptionsError(
      'synchronousCommit',
      value,
      `synchronousCommit is one of ${SYNCHRONOUS_COMMIT_LEVELS.join(', ')} (PostgreSQL's synchronous_commit levels; not off, which could lose a grant already answered).`,
    )
  }
  return value as SynchronousCommit
}

/** What migrate() takes: the same pool or connection string and schema as the backend. */
export interface MigrateOptions {
  pool?: Pool
  connectionString?: string
  schema?: string
  /** Default 30000: the whole migration (including waiting for another process's) fails after it. */
  timeoutMs?: number
}

/** The schema conclave's tables live in when none is given. */
export const DEFAULT_SCHEMA = 'conclave'
const SCHEMA_RULE =
  'A schema name is 1 to 50 characters of lower-case letters, digits and _, starting with a letter or _ and not with pg_ (e.g. "conclave").'
const KNOWN_OPTIONS = [
  'pool',
  'connectionString',
  'schema',
  'listen',
  'timeoutMs',
  'pollMs',
  'heartbeatMs',
  'migrate',
  'synchronousCommit',
  'maxLeaseMs',
]
const KNOWN_MIGRATE_OPTIONS = ['pool', 'connectionString', 'schema', 'timeoutMs']

/**
 * A schema name, checked: it is put into SQL as a quoted identifier and into the NOTIFY channel
 * as a literal, so only lower-case letters, digits and _ are allowed (nothing to escape).
 */
export function validateSchema(schema: unknown, field = 'schema'): string {
  if (
    typeof schema !== 'string' ||
    !/^[a-z_][a-z0-9_]{0,49}$/.test(schema) ||
    schema.startsWith('pg_')
  ) {
    throw new OptionsError(field, schema, SCHEMA_RULE)
  }
  return schema
}

/** The backend's timings: the call deadline, the polling fallback, the LISTEN heartbeat. */
export interface Timings {
  timeoutMs: number
  pollMs: number
  heartbeatMs: number
}

/** The timings of `options` with their defaults (10 s, 3 s, 10 s). */
export function resolveTimings(options: PostgresBackendOptions): Timings {
  return {
    timeoutMs: callTimeoutMs(options),
    pollMs: optionalMilliseconds('pollMs', options.pollMs, 3_000, 10),
    heartbeatMs: optionalMilliseconds('heartbeatMs', options.heartbeatMs, 10_000, 100),
  }
}

/**
 * Checks what postgresBackend() was given before it makes a pool (so a bad option never leaves
 * one behind); returns the call deadline the pool it makes is set up with.
 */
export function checkBackendOptions(options: PostgresBackendOptions): number {
  renamedOption(options, 'queryTimeoutMs', 'timeoutMs')
  checkKeys(
    options,
    KNOWN_OPTIONS,
    'postgresBackend',
    'postgresBackend() takes { pool } or { connectionString }, and optionally schema.',
  )
  checkPoolSource(options)
  if (
    options.listen !== undefined &&
    (typeof options.listen !== 'object' || options.listen === null)
  ) {
    throw new OptionsError(
      'listen',
      options.listen,
      'listen must be pg Client settings, e.g. { connectionString }.',
    )
  }
  if (options.migrate !== undefined && typeof options.migrate !== 'boolean') {
    throw new OptionsError('migrate', options.migrate, 'migrate must be true or false.')
  }
  validateSchema(options.schema ?? DEFAULT_SCHEMA)
  validateSynchronousCommit(options.synchronousCommit)
  checkMaxLeaseMs(options.maxLeaseMs)
  return callTimeoutMs(options)
}

/** What migrate() was given, checked: the schema and the whole migration's deadline. */
export function checkMigrateOptions(options: MigrateOptions): {
  schema: string
  timeoutMs: number
} {
  checkKeys(
    options,
    KNOWN_MIGRATE_OPTIONS,
    'migrate()',
    'migrate() takes { pool | connectionString, schema }.',
  )
  checkPoolSource(options)
  const schema = validateSchema(options.schema ?? DEFAULT_SCHEMA)
  const timeoutMs = optionalMilliseconds('timeoutMs', options.timeoutMs, 30_000, 100)
  return { schema, timeoutMs }
}

/** The call deadline (default 10 s): the pool the backend makes is set up with it too. */
function callTimeoutMs(options: PostgresBackendOptions): number {
  return optionalMilliseconds('timeoutMs', options.timeoutMs, 10_000, 100)
}

/** An options object with only `known` keys; an unknown key's value is shown only if no secret. */
function checkKeys(options: unknown, known: string[], name: string, takes: string): void {
  if (options === undefined) throw new OptionsError('options', options, takes)
  checkOptions(options as object, known, name, takes)
}

function isPool(value: unknown): value is Pool {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Pool).query === 'function' &&
    typeof (value as Pool).connect === 'function'
  )
}

/** Exactly one of pool and connectionString, each of the right kind. */
function checkPoolSource(options: { pool?: unknown; connectionString?: unknown }): void {
  if (options.pool !== undefined && options.connectionString !== undefined) {
    // Not the values themselves: a connection string (or a pool's options) may hold a password.
    throw new OptionsError(
      'pool',
      'both pool and connectionString',
      'Give either pool or connectionString, not both.',
    )
  }
  if (options.pool !== undefined) {
    if (!isPool(options.pool)) {
      throw new OptionsError(
        'pool',
        options.pool,
        'pool must be a pg Pool (an object with query() and connect()), e.g. new pg.Pool({ connectionString }).',
      )
    }
    return
  }
  if (typeof options.connectionString !== 'string' || options.connectionString.length === 0) {
    throw new OptionsError(
      'connectionString',
      options.connectionString,
      'Give a pg Pool as pool, or a connection string such as postgres://user@host:5432/db.',
    )
  }
}

/** The query parameters pg reads from a connection string (others it would silently ignore). */
const PG_URL_PARAMS = [
  'host',
  'port',
  'user',
  'password',
  'options',
  'application_name',
  'fallback_application_name',
  'client_encoding',
  'replication',
  'binary',
  'statement_timeout',
  'lock_timeout',
  'idle_in_transaction_session_timeout',
  'ssl',
  'sslmode',
  'sslcert',
  'sslkey',
  'sslrootcert',
  'sslnegotiation',
  'uselibpqcompat',
]
const URL_RULE =
  'A PostgreSQL backend URL looks like postgres://user:password@host:5432/db?schema=conclave.'
/** The query parameters of a backend URL that are conclave's (taken out of the connection string). */
const CONCLAVE_URL_PARAMS = ['schema', 'maxLeaseMs']

/**
 * `postgres://user@host:5432/db?schema=name&maxLeaseMs=N` (or `postgresql://`) to options.
 * `schema` and `maxLeaseMs` are conclave's; the parameters pg reads stay in the connection string; any other is refused (pg
 * would ignore it). A password never appears in an error.
 */
export function optionsFromUrl(url: string): PostgresBackendOptions {
  const shown = typeof url === 'string' ? redactUrl(url) : url
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    throw new OptionsError('backend', shown, URL_RULE)
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw new OptionsError(
      'backend',
      shown,
      'A PostgreSQL backend URL starts with postgres:// or postgresql://.',
    )
  }
  for (const [name, value] of parsed.searchParams) {
    if (!CONCLAVE_URL_PARAMS.includes(name) && !PG_URL_PARAMS.includes(name)) {
      throw new OptionsError(
        name,
        shownValue(name, value),
        `"${name}" is not a parameter of PostgreSQL backend URLs.`,
        `Known: ${CONCLAVE_URL_PARAMS.join(' and ')} (conclave's), and pg's ${PG_URL_PARAMS.join(', ')}.`,
      )
    }
  }
  for (const name of CONCLAVE_URL_PARAMS) {
    const values = parsed.searchParams.getAll(name)
    if (values.length > 1) {
      throw new OptionsError(name, values, `Give the ${name} parameter once.`)
    }
  }
  const schemaText = parsed.searchParams.get('schema')
  const maxLeaseText = parsed.searchParams.get('maxLeaseMs')
  parsed.searchParams.delete('schema')
  parsed.searchParams.delete('maxLeaseMs')
  const schema = schemaText === null ? undefined : validateSchema(schemaText, 'schema')
  let maxLeaseMs: number | undefined
  if (maxLeaseText !== null) {
    if (!/^\d+$/.test(maxLeaseText)) {
      throw new OptionsError(
        'maxLeaseMs',
        maxLeaseText,
        'maxLeaseMs in a PostgreSQL URL is a whole number of milliseconds (e.g. ?maxLeaseMs=30000).',
      )
    }
    maxLeaseMs = checkMaxLeaseMs(Number(maxLeaseText))
  }
  return {
    connectionString: parsed.toString(),
    ...(schema ? { schema } : {}),
    ...(maxLeaseMs === undefined ? {} : { maxLeaseMs }),
  }
}
