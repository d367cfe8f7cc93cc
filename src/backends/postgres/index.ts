/**
 * conclave/postgres: the PostgreSQL backend (see backend.ts for how it works). This file is the
 * public face: the factories and what a user of the backend needs to name.
 */
import { PostgresBackend } from './backend.js'
import { checkBackendOptions, optionsFromUrl, type PostgresBackendOptions } from './options.js'
import { type ClientClass, loadPg, ownPool } from './pool.js'

export { PostgresBackend } from './backend.js'
export { latestSchemaVersion, migrate, type MigrateResult } from './migrate.js'
export {
  type MigrateOptions,
  type PostgresBackendOptions,
  type SynchronousCommit,
  validateSchema,
} from './options.js'
export { serverAddress } from './pool.js'
export { redactUrl } from '../kit.js'

/**
 * A PostgreSQL backend over your `pg` Pool (`{ pool }`) or a pool it makes and owns
 * (`{ connectionString }`).
 */
export function postgresBackend(options: PostgresBackendOptions): PostgresBackend {
  const timeoutMs = checkBackendOptions(options)
  if (options.pool) {
    const pool = options.pool
    // The pool's own Client class when it has one (same pg copy), else pg's.
    const own = (pool as unknown as { Client?: ClientClass }).Client
    return new PostgresBackend(options, pool, false, async () => own ?? loadPg().Client)
  }
  // A pool of its own needs pg now: without it, this fails at once with a MissingPeerError.
  const pool = ownPool(options.connectionString!, timeoutMs)
  return new PostgresBackend(options, pool, true, async () => loadPg().Client)
}

/**
 * `postgres://user@host:5432/db?schema=name` (or `postgresql://`): a backend owning its pool.
 * `schema` is conclave's; the parameters pg reads go to pg; any other is refused (pg would ignore
 * it). Fails at once with a MissingPeerError when pg is not installed.
 */
export async function backendFromUrl(url: string): Promise<PostgresBackend> {
  return postgresBackend(optionsFromUrl(url))
}
