/**
 * The PostgreSQL backend's connections: `pg` loaded only when needed (it is an optional peer
 * dependency), the pools it makes and owns, the server's address for messages, and one
 * statement through a pool with a deadline and one retry on a connection the server dropped.
 */
import type { Client, ClientConfig, Pool, QueryResultRow } from 'pg'
import { ConclaveError } from '../../errors.js'
import { backendError, requirePeer, serverLabel, timeoutError, withDeadline } from '../kit.js'

/** The `pg` module's types, for what is loaded at run time. */
export type PgModule = typeof import('pg')

/** A pg Client class (the pool's own, or pg's), for the LISTEN connection. */
export type ClientClass = new (config: ClientConfig) => Client

let pgModule: PgModule | undefined

/** `pg`, loaded on first need (it is CommonJS, so synchronously): a MissingPeerError without it. */
export function loadPg(): PgModule {
  pgModule ??=
    bundledPg() ?? requirePeer<PgModule>('pg', 'conclave/postgres with a connection string or URL')
  return pgModule
}

/**
 * pg as a bundler carried it along: a bundler sees a literal `require('pg')` (not requirePeer's
 * computed one) and bundles pg, and a bundle defines `require`; Node's ES modules do not, so
 * unbundled this is undefined and requirePeer loads pg (or says it is missing).
 */
function bundledPg(): PgModule | undefined {
  if (typeof require !== 'function') return undefined
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require('pg') as PgModule
  } catch {
    return undefined
  }
}

/**
 * A pool this backend (or migrate()) makes and ends itself, set up so a dead connection fails a
 * call in bounded time. An idle connection's error (server restart, terminated backend) must
 * not crash the process: the next query on the pool says what is wrong.
 */
export function ownPool(connectionString: string, queryTimeoutMs: number): Pool {
  const pg = loadPg()
  const pool = new pg.Pool({
    connectionString,
    connectionTimeoutMillis: Math.min(queryTimeoutMs, 10_000),
    query_timeout: queryTimeoutMs,
    statement_timeout: queryTimeoutMs,
    keepAlive: true,
    idleTimeoutMillis: 30_000,
    max: 10,
  })
  pool.on('error', () => undefined)
  return pool
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

/** How messages name the server: `postgres at host:port`. */
export function postgresLabel(where?: string): string {
  return serverLabel('postgres', where)
}

const addresses = new WeakMap<object, string>()

/** The address of a pool's server (from its options), cached per pool. */
export function poolAddress(pool: Pool): string {
  let where = addresses.get(pool)
  if (where === undefined) {
    where = serverAddress((pool as unknown as { options?: ClientConfig }).options)
    addresses.set(pool, where)
  }
  return where
}

/** One statement through the pool under `timeoutMs`; failures are BackendErrors naming where. */
export async function poolQuery<R extends QueryResultRow>(
  pool: Pool,
  text: string,
  values: unknown[],
  timeoutMs: number,
  what: string,
): Promise<R[]> {
  const label = postgresLabel(poolAddress(pool))
  // query_timeout makes pg drop the connection of a stuck query; the outer timeout also
  // covers waiting for a connection, which query_timeout does not.
  const once = () =>
    withDeadline(
      pool.query<R>({ text, values, query_timeout: timeoutMs } as { text: string }),
      timeoutMs,
      () => timeoutError(label, what, timeoutMs),
    )
  try {
    return (await once()).rows
  } catch (first) {
    // A pooled connection the server dropped while idle (restart, pg_terminate_backend) fails
    // the next query on it; the pool has discarded it, so try once more. Every statement here
    // is idempotent (a repeated acquire by the same candidate returns the same grant).
    if (!connectionLost(first)) throw backendError(label, what, first)
    try {
      return (await once()).rows
    } catch (error) {
      throw backendError(label, what, error)
    }
  }
}

function connectionLost(error: unknown): boolean {
  if (!(error instanceof Error) || error instanceof ConclaveError) return false
  const code = (error as { code?: unknown }).code
  if (typeof code === 'string' && /^(57P0[123]|08...|ECONNRESET|EPIPE)$/.test(code)) return true
  return /Connection terminated|connection error and is not queryable/i.test(error.message)
}
