/**
 * The PostgreSQL subjects, on one private server with pg_stat_statements loaded: conclave/postgres
 * and the `advisory-lock` package (session advisory locks, a new connection per lock). Both
 * connect as one role, so a request is one statement that role ran (pg_stat_statements calls).
 * And a baseline, no lock at all: a committed single-row upsert per acquire (and a delete per
 * release), the cheapest durable write, so conclave's acquire can be read as a multiple of it.
 */
import advisory from 'advisory-lock'
import pg from 'pg'
import { postgresBackend, type PostgresBackend } from '../../src/backends/postgres/index.js'
import {
  type HoldInChild,
  type HolderConfig,
  processCpuMs,
  spawnHolder,
  spawnWaiters,
  type WaitersConfig,
} from '../probes.js'
import { baselineOnly, type Candidate, type Subject } from '../scenarios.js'
import { conclaveSubject, expiryFromHolders, holderId, holdWithElection } from './conclave.js'

const createMutex = advisory.default

/** The server the subjects share. */
export interface PostgresTarget {
  host: string
  port: number
  /** The postmaster: its backends are its children. */
  pid: number
  database: string
  /** The role every subject connects as (its statements are the ones counted). */
  role: string
  /** The bench's own connections (another role). */
  admin: pg.Pool
  /** The bench's own connection string (the expiry probe). */
  adminUrl: string
  /** conclave's schema. */
  schema: string
}

const url = (t: { role: string; host: string; port: number; database: string }) =>
  `postgres://${t.role}@${t.host}:${t.port}/${t.database}`

/** Statements the subjects' role has run (pg_stat_statements calls): the server's own count. */
async function statementsRun(target: PostgresTarget): Promise<number> {
  const result = await target.admin.query<{ n: string }>(
    `SELECT coalesce(sum(calls), 0) AS n FROM pg_stat_statements s
       JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = $1`,
    [target.role],
  )
  return Number(result.rows[0]!.n)
}

/** The subject names of this module, as the suite lists them. */
export const POSTGRES_SUBJECTS = ['conclave/postgres', 'advisory-lock', 'baseline: upsert'] as const

/** Why the baseline runs no scenario but the uncontended one. */
const NOT_A_LOCK = 'not a lock: one committed upsert per acquire, for scale only'

/** One of the PostgreSQL subjects on `target`. */
export function postgresSubject(
  name: (typeof POSTGRES_SUBJECTS)[number],
  target: PostgresTarget,
): Subject {
  const ids = new Map<string, string>()
  const common = {
    name,
    requests: () => statementsRun(target),
    serverRequests: () => statementsRun(target),
    serverCpuMs: async () => processCpuMs(target.pid, true),
    serverPort: target.port,
    spawnHolder(resource: string, leaseMs: number, via?: { port: number }) {
      const id = holderId()
      ids.set(resource, id)
      const config: HolderConfig = {
        subject: name,
        resource,
        leaseMs,
        id,
        url: url({ ...target, port: via?.port ?? target.port }),
        schema: target.schema,
      }
      return spawnHolder('postgres', config)
    },
  }
  if (name === 'conclave/postgres') {
    let probe: PostgresBackend | undefined
    return conclaveSubject({
      ...common,
      open() {
        const backend = postgresBackend({ connectionString: url(target), schema: target.schema })
        return { backend, close: () => backend.close() }
      },
      spawnWaiters: (resource, count, leaseMs, startInFlight) =>
        spawnWaiters('postgres', {
          subject: name,
          resource,
          leaseMs,
          count,
          startInFlight,
          url: url(target),
          schema: target.schema,
        }),
      expiry: expiryFromHolders(
        () =>
          (probe ??= postgresBackend({ connectionString: target.adminUrl, schema: target.schema })),
        ids,
      ),
      close: async () => probe?.close(),
    })
  }
  if (name === 'baseline: upsert') {
    const pools = new Set<pg.Pool>()
    return {
      name,
      requests: common.requests,
      serverCpuMs: common.serverCpuMs,
      async candidate(): Promise<Candidate> {
        const pool = new pg.Pool({ connectionString: url(target), max: 1 })
        pool.on('error', () => {})
        pools.add(pool)
        await pool.query(
          'CREATE TABLE IF NOT EXISTS bench_baseline (k text PRIMARY KEY, v timestamptz NOT NULL)',
        )
        return {
          async acquire(resource) {
            // One statement, committed (synchronous_commit as the server has it), one round trip.
            await pool.query(
              'INSERT INTO bench_baseline (k, v) VALUES ($1, clock_timestamp()) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v',
              [resource],
            )
            return async () => {
              await pool.query('DELETE FROM bench_baseline WHERE k = $1', [resource])
            }
          },
          close: async () => {
            pools.delete(pool)
            await pool.end()
          },
        }
      },
      cannot: Object.fromEntries(
        ['handoff', 'crash', 'takeover', 'partition', 'idle-waiter', 'renew-many'].map((id) => [
          id,
          NOT_A_LOCK,
        ]),
      ),
      notes: {
        'uncontended.acquire': 'an upsert: the cheapest committed write (no lock)',
        'uncontended.release': 'a delete of that row',
      },
      close: async () => {
        await Promise.all([...pools].map((p) => p.end()))
      },
    }
  }
  return {
    ...common,
    async candidate(): Promise<Candidate> {
      const mutexes = createMutex(url(target))
      return {
        // pg_advisory_lock blocks in the server: a wait cannot be given up (the signal is not used).
        async acquire(resource) {
          return mutexes(resource).lock()
        },
        close: async () => {},
      }
    },
    cannot: {
      takeover: 'a session lock has no lease to expire: it is freed when its connection closes',
      'renew-many':
        'no renewal (session locks), but a server connection per held lock: 10,000 locks need 10,000 connections',
    },
    notes: {
      'idle-waiter.requests per waiter':
        'but each waiter holds a server connection (a backend process) blocked in pg_advisory_lock',
    },
  }
}

/** In a holder process: the subject named in `config`, holding `config.resource`. */
export const holdInChild: HoldInChild = async (config, onLost) => {
  const connectionString = String(config.url)
  if (config.subject === 'conclave/postgres') {
    const backend = postgresBackend({ connectionString, schema: String(config.schema) })
    return holdWithElection(backend, config, onLost)
  }
  // A session lock is held as long as its connection: nothing tells the holder it lost.
  await createMutex(connectionString)(config.resource).lock()
}

/** In a waiter process: the backend its candidates share. */
export const waitersBackend = (config: WaitersConfig) =>
  postgresBackend({ connectionString: String(config.url), schema: String(config.schema) })

/**
 * The baseline of PostgreSQL's cheapest committed write: "acquire" is one single-row upsert
 * (INSERT ... ON CONFLICT DO UPDATE, autocommit, the server's default synchronous_commit) and
 * "release" one DELETE of that row, on one connection of the subjects' role.
 */
export function postgresUpsertBaseline(target: PostgresTarget): Subject {
  return {
    name: 'baseline: postgres upsert',
    cannot: baselineOnly(),
    async candidate(): Promise<Candidate> {
      const client = new pg.Client({ connectionString: url(target) })
      client.on('error', () => {})
      await client.connect()
      await client.query(
        // Its own table: the 'baseline: upsert' subject's bench_baseline has a timestamptz v.
        'CREATE TABLE IF NOT EXISTS bench_upsert (k text PRIMARY KEY, v bigint NOT NULL)',
      )
      let n = 0
      return {
        async acquire(resource) {
          await client.query(
            `INSERT INTO bench_upsert (k, v) VALUES ($1, $2)
               ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v`,
            [resource, ++n],
          )
          return async () =>
            void (await client.query('DELETE FROM bench_upsert WHERE k = $1', [resource]))
        },
        close: () => client.end(),
      }
    },
  }
}
