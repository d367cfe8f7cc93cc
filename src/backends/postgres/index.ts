/**
 * The PostgreSQL backend: grants in a table written only with the database clock
 * (`clock_timestamp()`), tokens that never go back, acquires serialised per resource by a row
 * lock, LISTEN/NOTIFY on one dedicated connection to wake waiters, and versioned migrations
 * under a transaction advisory lock. Every operation is one statement, so any pool (and
 * PgBouncer in transaction mode) works: no session state, no session advisory locks.
 *
 * `pg` is an optional peer dependency: imported only for its types, or at run time when the
 * backend has to make a pool or a client of its own.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import type { Client, ClientConfig, Notification, Pool, QueryResultRow } from 'pg'
import {
  type AcquireRequest,
  type AcquireResult,
  type Backend,
  type Holder,
  type Json,
  type ReleaseRequest,
  type RenewRequest,
  type Unwatch,
  validateAcquire,
  validateRelease,
  validateRenew,
  validateResource,
} from '../../backend.js'
import {
  BackendClosedError,
  BackendError,
  ConclaveError,
  MissingPeerError,
  OptionsError,
  TicketsMismatchError,
  describe,
} from '../../errors.js'
import { CloseGate } from '../kit.js'

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
  queryTimeoutMs?: number
  /** While the LISTEN connection is down, watchers are woken this often. Default 3000. */
  pollMs?: number
  /** How often the LISTEN connection is checked with `SELECT 1` (finds a hung path). Default 10000. */
  heartbeatMs?: number
  /** Run pending migrations on first use (default true). With false, an old schema is an error. */
  migrate?: boolean
}

export interface MigrateOptions {
  pool?: Pool
  connectionString?: string
  schema?: string
  /** Default 30000: the whole migration (including waiting for another process's) fails after it. */
  timeoutMs?: number
}

export interface MigrateResult {
  schema: string
  /** The version before (0: a fresh schema). */
  from: number
  /** The version now (this library's latest). */
  to: number
}

const DEFAULT_SCHEMA = 'conclave'
const SCHEMA_RULE =
  'A schema name is 1 to 50 characters of lower-case letters, digits and _, starting with a letter or _ and not with pg_ (e.g. "conclave").'
/** The lock class of migrations (the first key of pg_advisory_xact_lock(int, int)): "clav". */
const MIGRATION_LOCK_CLASS = 0x636c6176
const KNOWN_OPTIONS = new Set([
  'pool',
  'connectionString',
  'schema',
  'listen',
  'queryTimeoutMs',
  'pollMs',
  'heartbeatMs',
  'migrate',
])

// ---------------------------------------------------------------------------------------------
// SQL files

const sqlCache = new Map<string, string>()

function sqlFile(name: string): string {
  let text = sqlCache.get(name)
  if (text === undefined) {
    text = readFileSync(new URL(`./sql/${name}`, import.meta.url), 'utf8')
    sqlCache.set(name, text)
  }
  return text
}

interface Migration {
  version: number
  name: string
  file: string
}

let migrationList: Migration[] | undefined

/** sql/migrations/NNN_name.sql, in version order. */
function migrations(): Migration[] {
  migrationList ??= readdirSync(new URL('./sql/migrations/', import.meta.url))
    .map((file) => /^(\d+)_([a-z0-9_]+)\.sql$/.exec(file))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ version: Number(m[1]), name: m[2]!, file: `migrations/${m[0]}` }))
    .sort((a, b) => a.version - b.version)
  return migrationList
}

/** The newest schema version this library knows. */
export function latestSchemaVersion(): number {
  return migrations().at(-1)?.version ?? 0
}

/** A statement with the schema (quoted identifier) and the NOTIFY channel (literal) filled in. */
function render(text: string, schema: string): string {
  // The schema was validated (lower-case letters, digits, _), so neither needs escaping.
  return text.replaceAll('{schema}', `"${schema}"`).replaceAll('{channel}', `'${channel(schema)}'`)
}

function channel(schema: string): string {
  return `conclave:${schema}`
}

// ---------------------------------------------------------------------------------------------
// validation

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

/** An option's value as an error may show it: `***` for what may be a secret. */
function shownValue(name: string, value: unknown): unknown {
  return /pass|secret|token|key/i.test(name) ? '***' : value
}

function isPool(value: unknown): value is Pool {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Pool).query === 'function' &&
    typeof (value as Pool).connect === 'function'
  )
}

function intOption(field: string, value: unknown, fallback: number, min: number): number {
  if (value === undefined) return fallback
  if (!Number.isInteger(value) || (value as number) < min || (value as number) > 2 ** 31 - 1) {
    throw new OptionsError(
      field,
      value,
      `${field} must be an integer number of milliseconds from ${min} to 2147483647.`,
    )
  }
  return value as number
}

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

// ---------------------------------------------------------------------------------------------
// pools and queries

type PgModule = typeof import('pg')

let pgModule: PgModule | undefined

/** `pg`, loaded on first need (it is CommonJS, so synchronously): a MissingPeerError without it. */
function loadPg(): PgModule {
  if (pgModule) return pgModule
  try {
    pgModule = createRequire(import.meta.url)('pg') as PgModule
    return pgModule
  } catch (error) {
    if (!isModuleNotFound(error, 'pg')) throw error
    throw new MissingPeerError('pg', 'conclave/postgres with a connection string or URL', {
      cause: error,
    })
  }
}

function isModuleNotFound(error: unknown, name: string): boolean {
  const code = (error as { code?: unknown } | null)?.code
  return (
    (code === 'MODULE_NOT_FOUND' || code === 'ERR_MODULE_NOT_FOUND') &&
    error instanceof Error &&
    error.message.includes(`'${name}'`)
  )
}

/** The settings of the pools this backend makes: a dead connection fails a call in bounded time. */
function ownPoolConfig(connectionString: string, queryTimeoutMs: number) {
  return {
    connectionString,
    connectionTimeoutMillis: Math.min(queryTimeoutMs, 10_000),
    query_timeout: queryTimeoutMs,
    statement_timeout: queryTimeoutMs,
    keepAlive: true,
    idleTimeoutMillis: 30_000,
    max: 10,
  }
}

/** Rejects with a BackendError after `ms`; the late outcome of `promise` is dropped quietly. */
function withTimeout<T>(promise: Promise<T>, ms: number, what: string, where?: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new BackendError(`${prefix(where)}: ${what} got no answer in ${ms} ms`))
    }, ms)
    timer.unref()
    promise.then(
      (value) => {
        clearTimeout(timer)
        resolve(value)
      },
      (error: unknown) => {
        clearTimeout(timer)
        reject(error instanceof Error ? error : new BackendError(String(error)))
      },
    )
  })
}

function prefix(where: string | undefined): string {
  return where ? `postgres at ${where}` : 'postgres'
}

/** A failure as a BackendError naming the server (host:port) and keeping the original as cause. */
function backendError(what: string, error: unknown, where?: string): Error {
  if (error instanceof ConclaveError) return error
  return new BackendError(`${prefix(where)}: ${what} failed: ${errorText(error)}`, {
    cause: error,
  })
}

/** An error's own words; a connect failure to every address of a name (AggregateError) has none. */
function errorText(error: unknown): string {
  if (!(error instanceof Error)) return String(error)
  if (error.message) return error.message
  const inner = (error as { errors?: unknown }).errors
  if (Array.isArray(inner) && inner.length > 0) return inner.map(errorText).join('; ')
  const code = (error as { code?: unknown }).code
  return typeof code === 'string' ? code : error.name
}

/**
 * The server a pool or client config connects to, as `host:port` (a socket directory as
 * `dir/.s.PGSQL.port`), for messages: never the user or password.
 */
export function serverAddress(config: ClientConfig | undefined): string {
  let host: string | undefined = config?.host
  let port: string | number | undefined = config?.port
  if (config?.connectionString) {
    try {
      const url = new URL(config.connectionString)
      host = url.searchParams.get('host') ?? (decodeURIComponent(url.hostname) || host)
      port = url.searchParams.get('port') ?? (url.port || port)
    } catch {
      // pg will say what is wrong with it
    }
  }
  host ||= process.env.PGHOST || 'localhost'
  port ||= process.env.PGPORT || 5432
  if (host.startsWith('/')) return `${host}/.s.PGSQL.${port}`
  return `${host.includes(':') && !host.startsWith('[') ? `[${host}]` : host}:${port}`
}

const addresses = new WeakMap<object, string>()

/** The address of a pool's server (from its options), cached per pool. */
function poolAddress(pool: Pool): string {
  let where = addresses.get(pool)
  if (where === undefined) {
    where = serverAddress((pool as unknown as { options?: ClientConfig }).options)
    addresses.set(pool, where)
  }
  return where
}

async function poolQuery<R extends QueryResultRow>(
  pool: Pool,
  text: string,
  values: unknown[],
  timeoutMs: number,
  what: string,
): Promise<R[]> {
  const where = poolAddress(pool)
  // query_timeout makes pg drop the connection of a stuck query; the outer timeout also
  // covers waiting for a connection, which query_timeout does not.
  const once = () =>
    withTimeout(
      pool.query<R>({ text, values, query_timeout: timeoutMs } as { text: string }),
      timeoutMs,
      what,
      where,
    )
  try {
    return (await once()).rows
  } catch (first) {
    // A pooled connection the server dropped while idle (restart, pg_terminate_backend) fails
    // the next query on it; the pool has discarded it, so try once more. Every statement here
    // is idempotent (a repeated acquire by the same candidate returns the same grant).
    if (!connectionLost(first)) throw backendError(what, first, where)
    try {
      return (await once()).rows
    } catch (error) {
      throw backendError(what, error, where)
    }
  }
}

function connectionLost(error: unknown): boolean {
  if (!(error instanceof Error) || error instanceof ConclaveError) return false
  const code = (error as { code?: unknown }).code
  if (typeof code === 'string' && /^(57P0[123]|08...|ECONNRESET|EPIPE)$/.test(code)) return true
  return /Connection terminated|connection error and is not queryable/i.test(error.message)
}

function toToken(value: unknown, what: string): number {
  const token = typeof value === 'number' ? value : Number(value)
  if (!Number.isSafeInteger(token) || token < 1) {
    throw new BackendError(
      `postgres: ${what} returned a token that is not a safe integer: ${describe(value)}`,
    )
  }
  return token
}

// ---------------------------------------------------------------------------------------------
// migrations

function tooNew(schema: string, version: number): ConclaveError {
  return new ConclaveError(
    'ERR_CONCLAVE_SCHEMA_TOO_NEW',
    `postgres: schema "${schema}" is at version ${version}, newer than this conclave knows (${latestSchemaVersion()}). Upgrade conclave in this process, or give it another schema.`,
  )
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
        await q(render(sqlFile(migration.file), schema))
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
  const where = poolAddress(pool)
  try {
    return await withTimeout(work(), timeoutMs, `migrating schema "${schema}"`, where)
  } catch (error) {
    throw backendError(`migrating schema "${schema}"`, error, where)
  }
}

/**
 * Brings `schema` up to this library's version (idempotent; safe to run from many processes at
 * once). Run it ahead of time, e.g. from a deploy step:
 *   node -e "import('conclave/postgres').then(m => m.migrate({ connectionString: process.env.DATABASE_URL }))"
 */
export async function migrate(options: MigrateOptions): Promise<MigrateResult> {
  if (typeof options !== 'object' || options === null) {
    throw new OptionsError(
      'options',
      options,
      'migrate() takes { pool | connectionString, schema }.',
    )
  }
  for (const key of Object.keys(options)) {
    if (!['pool', 'connectionString', 'schema', 'timeoutMs'].includes(key)) {
      throw new OptionsError(
        key,
        shownValue(key, (options as Record<string, unknown>)[key]),
        'Unknown migrate() option; known: pool, connectionString, schema, timeoutMs.',
      )
    }
  }
  checkPoolSource(options)
  const schema = validateSchema(options.schema ?? DEFAULT_SCHEMA)
  const timeoutMs = intOption('timeoutMs', options.timeoutMs, 30_000, 100)
  if (options.pool) return runMigrations(options.pool, schema, timeoutMs)
  const pg = loadPg()
  const pool = new pg.Pool(ownPoolConfig(options.connectionString!, timeoutMs))
  pool.on('error', () => undefined)
  try {
    return await runMigrations(pool, schema, timeoutMs)
  } finally {
    await pool.end().catch(() => undefined)
  }
}

// ---------------------------------------------------------------------------------------------
// the LISTEN connection

type ClientClass = new (config: ClientConfig) => Client

/**
 * One dedicated connection per backend, shared by all watches: it LISTENs on the schema's
 * channel, whose payload is the resource. After a loss it reconnects with backoff and then
 * wakes every watcher (a NOTIFY may have been missed); while it is down, a slow poll wakes them.
 */
class Listener {
  readonly #watchers = new Map<string, Set<() => void>>()
  #client: Client | undefined
  #listening = false
  #connecting: Promise<void> | undefined
  #attempt = 0
  #closed = false
  #reconnectTimer: NodeJS.Timeout | undefined
  #pollTimer: NodeJS.Timeout | undefined
  #heartbeatTimer: NodeJS.Timeout | undefined
  /** Connections made (the first one included): for tests and the benchmark. */
  connects = 0

  constructor(
    private readonly makeClient: () => Promise<Client>,
    /** The server's host:port, for messages. */
    private readonly where: string,
    private readonly channel: string,
    private readonly timeoutMs: number,
    private readonly pollMs: number,
    private readonly heartbeatMs: number,
  ) {}

  get listening(): boolean {
    return this.#listening
  }

  add(resource: string, fn: () => void): () => void {
    let set = this.#watchers.get(resource)
    if (!set) this.#watchers.set(resource, (set = new Set()))
    set.add(fn)
    return () => {
      set.delete(fn)
      if (set.size === 0 && this.#watchers.get(resource) === set) this.#watchers.delete(resource)
    }
  }

  /** Resolves once LISTEN is active; starts a connection attempt when none is under way. */
  async ready(): Promise<void> {
    if (this.#closed) throw new BackendClosedError('postgres')
    if (this.#listening) return
    if (this.#reconnectTimer) {
      clearTimeout(this.#reconnectTimer)
      this.#reconnectTimer = undefined
    }
    this.#connecting ??= this.#connect().finally(() => (this.#connecting = undefined))
    await this.#connecting
  }

  async #connect(): Promise<void> {
    let client: Client | undefined
    try {
      client = await this.makeClient()
      const current = client
      current.on('error', () => this.#lost(current))
      current.on('end', () => this.#lost(current))
      current.on('notification', (message: Notification) => {
        if (message.channel === this.channel && message.payload) this.#wake(message.payload)
      })
      this.#client = current
      this.connects++
      const where = this.where
      await withTimeout(
        current.connect(),
        this.timeoutMs,
        'connecting the LISTEN connection',
        where,
      )
      await withTimeout(current.query(`LISTEN "${this.channel}"`), this.timeoutMs, 'LISTEN', where)
      if (this.#closed || this.#client !== current) throw new BackendClosedError('postgres')
      this.#listening = true
      this.#attempt = 0
      this.#stopPoll()
      this.#startHeartbeat(current)
      // Anything released while we were not listening was not pushed: let every watcher look.
      this.#wakeAll()
    } catch (error) {
      if (client && this.#client === client) this.#lost(client)
      else if (client) destroy(client) // closed meanwhile
      throw backendError('the LISTEN connection', error, this.where)
    }
  }

  #lost(client: Client): void {
    if (this.#client !== client) return
    this.#client = undefined
    this.#listening = false
    this.#stopHeartbeat()
    destroy(client)
    if (this.#closed) return
    this.#startPoll()
    this.#scheduleReconnect()
  }

  #scheduleReconnect(): void {
    // Called from inside a failing #connect() too: the timer's ready() joins any attempt then
    // still under way, so attempts never overlap.
    if (this.#reconnectTimer || this.#closed) return
    const ceiling = Math.min(5_000, 100 * 2 ** Math.min(this.#attempt++, 10))
    const delay = ceiling / 2 + (Math.random() * ceiling) / 2
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = undefined
      this.ready().catch(() => {
        // #connect() already scheduled the next attempt through #lost().
      })
    }, delay)
    this.#reconnectTimer.unref()
  }

  #startPoll(): void {
    if (this.#pollTimer) return
    this.#pollTimer = setInterval(() => this.#wakeAll(), this.pollMs)
    this.#pollTimer.unref()
  }

  #stopPoll(): void {
    clearInterval(this.#pollTimer)
    this.#pollTimer = undefined
  }

  #startHeartbeat(client: Client): void {
    this.#stopHeartbeat()
    let busy = false
    this.#heartbeatTimer = setInterval(() => {
      if (busy) return
      busy = true
      withTimeout(client.query('SELECT 1'), this.timeoutMs, 'the LISTEN heartbeat')
        .catch(() => this.#lost(client))
        .finally(() => (busy = false))
    }, this.heartbeatMs)
    this.#heartbeatTimer.unref()
  }

  #stopHeartbeat(): void {
    clearInterval(this.#heartbeatTimer)
    this.#heartbeatTimer = undefined
  }

  #wake(resource: string): void {
    const set = this.#watchers.get(resource)
    if (set) for (const fn of [...set]) call(fn)
  }

  #wakeAll(): void {
    for (const set of this.#watchers.values()) for (const fn of [...set]) call(fn)
  }

  async close(): Promise<void> {
    this.#closed = true
    this.#watchers.clear()
    clearTimeout(this.#reconnectTimer)
    this.#reconnectTimer = undefined
    this.#stopPoll()
    this.#stopHeartbeat()
    const client = this.#client
    this.#client = undefined
    this.#listening = false
    await this.#connecting?.catch(() => undefined)
    if (client) {
      await withTimeout(client.end(), 2_000, 'closing the LISTEN connection').catch(() =>
        destroy(client),
      )
    }
  }
}

function call(fn: () => void): void {
  queueMicrotask(() => {
    try {
      fn()
    } catch {
      // A watcher's own failure is its business.
    }
  })
}

/** Ends a client at once, without waiting for the server (whose path may be hung). */
function destroy(client: Client): void {
  const stream = (client as unknown as { connection?: { stream?: { destroy?: () => void } } })
    .connection?.stream
  try {
    stream?.destroy?.()
  } catch {
    // already gone
  }
  client.end().catch(() => undefined)
}

// ---------------------------------------------------------------------------------------------
// the backend

interface AcquireRow {
  granted: boolean
  grant_token: string | null
  holder_list: { candidate: string; token: number; metadata: Json; remainingMs: number }[]
  retry_ms: string | null
  /** Set when the resource's live grants were made with other tickets (nothing was granted). */
  held_tickets: number | null
}

interface HolderRow {
  candidate: string
  token: string
  metadata: Json
  remaining_ms: string
}

export class PostgresBackend implements Backend {
  readonly name = 'postgres'
  readonly schema: string
  readonly #pool: Pool
  readonly #ownsPool: boolean
  readonly #timeoutMs: number
  readonly #autoMigrate: boolean
  readonly #listener: Listener
  readonly #sql: { acquire: string; renew: string; release: string; holders: string }
  readonly #gate = new CloseGate('postgres')
  #migrated: Promise<void> | undefined

  /** Use postgresBackend(options). `pool` is made by the factory when a connectionString is given. */
  constructor(
    options: PostgresBackendOptions,
    pool: Pool,
    ownsPool: boolean,
    ClientCtor: () => Promise<ClientClass>,
  ) {
    this.schema = validateSchema(options.schema ?? DEFAULT_SCHEMA)
    this.#timeoutMs = intOption('queryTimeoutMs', options.queryTimeoutMs, 10_000, 100)
    const pollMs = intOption('pollMs', options.pollMs, 3_000, 10)
    const heartbeatMs = intOption('heartbeatMs', options.heartbeatMs, 10_000, 100)
    this.#autoMigrate = options.migrate ?? true
    this.#pool = pool
    this.#ownsPool = ownsPool
    this.#sql = {
      acquire: render(sqlFile('acquire.sql'), this.schema),
      renew: render(sqlFile('renew.sql'), this.schema),
      release: render(sqlFile('release.sql'), this.schema),
      holders: render(sqlFile('holders.sql'), this.schema),
    }
    const timeoutMs = this.#timeoutMs
    const listenConfig: ClientConfig = {
      ...(options.listen ?? (pool as unknown as { options?: ClientConfig }).options ?? {}),
    }
    listenConfig.connectionTimeoutMillis ??= Math.min(timeoutMs, 10_000)
    listenConfig.keepAlive ??= true
    this.#listener = new Listener(
      async () => new (await ClientCtor())(listenConfig),
      serverAddress(listenConfig),
      channel(this.schema),
      timeoutMs,
      pollMs,
      heartbeatMs,
    )
  }

  /** Whether the LISTEN connection is up (for tests and health checks). */
  get listening(): boolean {
    return this.#listener.listening
  }

  /** How many times the LISTEN connection was (re)made. */
  get listenerConnects(): number {
    return this.#listener.connects
  }

  async acquire(request: AcquireRequest): Promise<AcquireResult> {
    this.#checkOpen()
    validateAcquire(request)
    const [row] = await this.#query<AcquireRow>(
      this.#sql.acquire,
      [
        request.resource,
        request.candidate,
        request.tickets,
        request.leaseMs,
        JSON.stringify(request.metadata ?? null),
      ],
      `acquire of "${request.resource}"`,
    )
    if (!row) throw new BackendError('postgres: acquire returned no row')
    if (row.held_tickets !== null && row.held_tickets !== undefined) {
      throw new TicketsMismatchError(request.resource, request.tickets, Number(row.held_tickets))
    }
    const holders: Holder[] = row.holder_list.map((h) => ({
      candidate: h.candidate,
      token: toToken(h.token, 'acquire'),
      metadata: h.metadata,
      remainingMs: Number(h.remainingMs),
    }))
    if (row.granted) return { acquired: true, token: toToken(row.grant_token, 'acquire'), holders }
    return { acquired: false, holders, retryInMs: Number(row.retry_ms ?? 0) }
  }

  async renew(requests: RenewRequest[]): Promise<boolean[]> {
    this.#checkOpen()
    if (!Array.isArray(requests)) {
      throw new OptionsError('requests', requests, 'renew() takes an array of renew requests.')
    }
    requests.forEach(validateRenew)
    if (requests.length === 0) return []
    // One row per grant: the same grant asked twice in a batch gets one update, both answers.
    const slotOf = new Map<string, number>()
    const unique: RenewRequest[] = []
    const slots = requests.map((r) => {
      const key = `${r.resource}\n${r.candidate}\n${r.token}`
      let slot = slotOf.get(key)
      if (slot === undefined) {
        slot = unique.push(r) - 1
        slotOf.set(key, slot)
      } else if (unique[slot]!.leaseMs < r.leaseMs) {
        unique[slot] = r
      }
      return slot
    })
    const rows = await this.#query<{ i: string }>(
      this.#sql.renew,
      [
        unique.map((r) => r.resource),
        unique.map((r) => r.candidate),
        unique.map((r) => r.token),
        unique.map((r) => r.leaseMs),
      ],
      `renewal of ${unique.length} grants`,
    )
    const renewed = new Set(rows.map((r) => Number(r.i) - 1))
    return slots.map((slot) => renewed.has(slot))
  }

  async release(request: ReleaseRequest): Promise<void> {
    this.#checkOpen()
    validateRelease(request)
    await this.#query(
      this.#sql.release,
      [request.resource, request.candidate, request.token ?? null],
      `release of "${request.resource}"`,
    )
  }

  async holders(resource: string): Promise<Holder[]> {
    this.#checkOpen()
    validateResource(resource)
    const rows = await this.#query<HolderRow>(
      this.#sql.holders,
      [resource],
      `holders of "${resource}"`,
    )
    return rows.map((r) => ({
      candidate: r.candidate,
      token: toToken(r.token, 'holders'),
      metadata: r.metadata,
      remainingMs: Number(r.remaining_ms),
    }))
  }

  async watch(resource: string, onChange: () => void): Promise<Unwatch> {
    this.#checkOpen()
    validateResource(resource)
    if (typeof onChange !== 'function') {
      throw new OptionsError('onChange', onChange, 'watch() takes a function to call on changes.')
    }
    // Registered before LISTEN completes, so nothing pushed after that point is missed.
    const remove = this.#listener.add(resource, () => onChange())
    try {
      await this.#listener.ready()
    } catch (error) {
      remove()
      this.#gate.check() // cut by close(): say so, finally
      throw error
    }
    let done = false
    return async () => {
      if (done) return
      done = true
      remove()
    }
  }

  /** Registers a hook close() runs and awaits before it gives anything up (the Backend contract). */
  onClose(hook: () => Promise<void>): () => void {
    return this.#gate.onClose(hook)
  }

  /**
   * Runs the onClose hooks first (the core ends its terms and releases their grants through
   * this backend, which still works), then stops LISTEN and ends the pool if it made it.
   */
  close(): Promise<void> {
    return this.#gate.close(async () => {
      await this.#listener.close()
      if (this.#ownsPool) await this.#pool.end().catch(() => undefined)
    })
  }

  #checkOpen(): void {
    this.#gate.check()
  }

  /** One statement through the pool (after the migrations); a call cut by close() says closed. */
  async #query<R extends QueryResultRow>(
    text: string,
    values: unknown[],
    what: string,
  ): Promise<R[]> {
    try {
      await this.#ready()
      return await poolQuery<R>(this.#pool, text, values, this.#timeoutMs, what)
    } catch (error) {
      this.#gate.check()
      throw error
    }
  }

  /** Migrations run once per backend instance, on first use; a failure is retried on the next call. */
  #ready(): Promise<void> {
    this.#migrated ??= this.#prepare().catch((error: unknown) => {
      this.#migrated = undefined
      throw error
    })
    return this.#migrated
  }

  async #prepare(): Promise<void> {
    if (this.#autoMigrate) {
      await runMigrations(this.#pool, this.schema, Math.max(this.#timeoutMs, 30_000))
      return
    }
    const version = (await readVersion(this.#pool, this.schema, this.#timeoutMs)) ?? 0
    if (version > latestSchemaVersion()) throw tooNew(this.schema, version)
    if (version < latestSchemaVersion()) {
      throw new ConclaveError(
        'ERR_CONCLAVE_SCHEMA_OLD',
        `postgres: schema "${this.schema}" is at version ${version}, this conclave needs ${latestSchemaVersion()}, and migrate is false. Run migrate({ connectionString, schema: "${this.schema}" }) first.`,
      )
    }
  }
}

/**
 * A PostgreSQL backend over your `pg` Pool (`{ pool }`) or a pool it makes and owns
 * (`{ connectionString }`).
 */
export function postgresBackend(options: PostgresBackendOptions): PostgresBackend {
  if (typeof options !== 'object' || options === null) {
    throw new OptionsError(
      'options',
      options,
      'postgresBackend() takes { pool } or { connectionString }, and optionally schema.',
    )
  }
  for (const key of Object.keys(options)) {
    if (!KNOWN_OPTIONS.has(key)) {
      throw new OptionsError(
        key,
        shownValue(key, (options as Record<string, unknown>)[key]),
        `Unknown postgresBackend option; known: ${[...KNOWN_OPTIONS].join(', ')}.`,
      )
    }
  }
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
  const timeoutMs = intOption('queryTimeoutMs', options.queryTimeoutMs, 10_000, 100)
  if (options.pool) {
    const pool = options.pool
    // The pool's own Client class when it has one (same pg copy), else pg's.
    const own = (pool as unknown as { Client?: ClientClass }).Client
    return new PostgresBackend(options, pool, false, async () => own ?? loadPg().Client)
  }
  // A pool of its own needs pg now: without it, this fails at once with a MissingPeerError.
  const pg = loadPg()
  const pool = new pg.Pool(ownPoolConfig(options.connectionString!, timeoutMs))
  // An idle connection's error (server restart, terminated backend) must not crash the process.
  pool.on('error', () => undefined)
  return new PostgresBackend(options, pool, true, async () => pg.Client)
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

/**
 * A URL as it may appear in a message: its password (in the user info or a `password`
 * parameter) replaced by `***`.
 */
export function redactUrl(url: string): string {
  const match = /^([a-z][a-z0-9+.-]*:\/\/)([^/?#]*)(.*)$/is.exec(url)
  if (!match) return url
  const scheme = match[1]!
  let authority = match[2]!
  let rest = match[3]!
  const at = authority.lastIndexOf('@')
  const colon = authority.indexOf(':')
  if (at >= 0 && colon >= 0 && colon < at) {
    authority = `${authority.slice(0, colon)}:***${authority.slice(at)}`
  }
  rest = rest.replace(/([?&](?:ssl)?password=)[^&#]*/gi, '$1***')
  return scheme + authority + rest
}

/**
 * `postgres://user@host:5432/db?schema=name` (or `postgresql://`): a backend owning its pool.
 * `schema` is conclave's; the parameters pg reads go to pg; any other is refused (pg would ignore
 * it). Fails at once with a MissingPeerError when pg is not installed.
 */
export async function backendFromUrl(url: string): Promise<PostgresBackend> {
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
    if (name !== 'schema' && !PG_URL_PARAMS.includes(name)) {
      throw new OptionsError(
        name,
        shownValue(name, value),
        `"${name}" is not a parameter of PostgreSQL backend URLs.`,
        `Known: schema (conclave's), and pg's ${PG_URL_PARAMS.join(', ')}.`,
      )
    }
  }
  const schemas = parsed.searchParams.getAll('schema')
  if (schemas.length > 1) {
    throw new OptionsError('schema', schemas, 'Give the schema parameter once.')
  }
  parsed.searchParams.delete('schema')
  const schema = schemas[0] === undefined ? undefined : validateSchema(schemas[0], 'schema')
  return postgresBackend({ connectionString: parsed.toString(), ...(schema ? { schema } : {}) })
}
