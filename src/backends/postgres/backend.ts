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
import type { ClientConfig, Pool, QueryResultRow } from 'pg'
import {
  type AcquireRequest,
  type AcquireResult,
  type Backend,
  type Holder,
  type Json,
  type ReleaseRequest,
  type RenewRequest,
  type StoredRecord,
  type Unwatch,
  type Waiter,
  type WaitReason,
  type WatchChange,
  type WriteRecordRequest,
  type WriteRecordResult,
  validateAcquire,
  validateRelease,
  validateRenew,
  validateResource,
} from '../../backend.js'
import {
  checkLeaseWithin,
  checkMaxLeaseMs,
  validateRecordKey,
  validateWriteRecord,
} from '../../validate.js'
import { BackendError, OptionsError, TicketsMismatchError, describe } from '../../errors.js'
import { CloseGate, unwatchOnce } from '../kit.js'
import { channel, type Statements, statements } from './layout.js'
import { prepareSchema } from './migrate.js'
import {
  DEFAULT_SCHEMA,
  type PostgresBackendOptions,
  resolveTimings,
  type SynchronousCommit,
  validateSchema,
  validateSynchronousCommit,
} from './options.js'
import { type ClientClass, poolQuery, serverAddress } from './pool.js'
import { Listener, type PlacedChange } from './wakeups.js'
import {
  type RecordRow,
  recordStatements,
  type RecordStatements,
  toRecord,
  toWriteResult,
  type WriteRow,
} from './records.js'

/** The row acquire.sql returns. */
interface AcquireRow {
  granted: boolean
  grant_token: string | null
  holder_list: { candidate: string; token: number; metadata: Json; remainingMs: number }[]
  retry_ms: string | null
  /** Set when the resource's live grants were made with other tickets (nothing was granted). */
  held_tickets: number | null
  /** Not granted: the live places in line before the candidate's (migration 5). */
  ahead: number | null
  /** Not granted, queued: the number of the candidate's place (migration 7). */
  place: string | null
}

/** A row holders.sql returns. */
interface HolderRow {
  candidate: string
  token: string
  metadata: Json
  remaining_ms: string
}

/** A row waiters.sql returns. */
interface WaiterRow {
  candidate: string
  remaining_ms: string
}

/** The PostgreSQL backend: one statement per operation through a pool, LISTEN/NOTIFY wake-ups. */
export class PostgresBackend implements Backend {
  readonly name = 'postgres'
  readonly schema: string
  readonly #pool: Pool
  readonly #ownsPool: boolean
  readonly #timeoutMs: number
  readonly #autoMigrate: boolean
  /** synchronous_commit for grants and renewals (null: the session's). */
  readonly #synchronousCommit: SynchronousCommit | null
  /** The longest lease a candidate may use here; the promotion grace lasts this long. */
  readonly maxLeaseMs: number
  readonly #listener: Listener
  readonly #sql: Statements
  readonly #gate = new CloseGate('postgres')
  #migrated: Promise<void> | undefined
  #recordSql: RecordStatements | undefined
  /**
   * The place each queued candidate of this backend last took (resource, newline, candidate):
   * a release's grant for that place is this process's to hold (watch passes it on).
   */
  readonly #places = new Map<string, number>()

  /** Use postgresBackend(options). `pool` is made by the factory when a connectionString is given. */
  constructor(
    options: PostgresBackendOptions,
    pool: Pool,
    ownsPool: boolean,
    ClientCtor: () => Promise<ClientClass>,
  ) {
    this.schema = validateSchema(options.schema ?? DEFAULT_SCHEMA)
    const { timeoutMs, pollMs, heartbeatMs } = resolveTimings(options)
    this.#timeoutMs = timeoutMs
    this.#autoMigrate = options.migrate ?? true
    this.#synchronousCommit = validateSynchronousCommit(options.synchronousCommit) ?? null
    this.maxLeaseMs = checkMaxLeaseMs(options.maxLeaseMs)
    this.#pool = pool
    this.#ownsPool = ownsPool
    this.#sql = statements(this.schema)
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
    checkLeaseWithin('postgres', request.leaseMs, this.maxLeaseMs)
    const [row] = await this.#query<AcquireRow>(
      this.#sql.acquire,
      [
        request.resource,
        request.candidate,
        request.tickets,
        request.leaseMs,
        JSON.stringify(request.metadata ?? null),
        this.#synchronousCommit,
        // The grace after a promotion covers the longest lease of any candidate, not this one's.
        this.maxLeaseMs,
        // A release may grant the place only if a watcher here hears of it (migration 7).
        this.#listener.hears(request.resource),
      ],
      `acquire of "${request.resource}"`,
    )
    if (!row) throw new BackendError('postgres: acquire returned no row')
    if (row.held_tickets !== null && row.held_tickets !== undefined) {
      throw new TicketsMismatchError(request.resource, request.tickets, Number(row.held_tickets))
    }
    const placeKey = `${request.resource}\n${request.candidate}`
    if (!row.granted && row.place !== null && row.place !== undefined)
      this.#places.set(placeKey, Number(row.place))
    else this.#places.delete(placeKey)
    const holders: Holder[] = row.holder_list.map((h) => ({
      candidate: h.candidate,
      token: toToken(h.token, 'acquire'),
      metadata: h.metadata,
      remainingMs: Number(h.remainingMs),
    }))
    if (row.granted) return { acquired: true, token: toToken(row.grant_token, 'acquire'), holders }
    const retryInMs = Number(row.retry_ms ?? 0)
    const ahead = Number(row.ahead ?? 0)
    // A free ticket refused to the first in line can only be the promotion grace (migration
    // 6's acquire); otherwise the tickets free are those of the waiters ahead. The asker's own
    // grant, listed when the grace held back its extension, takes no ticket from it.
    const others = holders.filter((h) => h.candidate !== request.candidate).length
    if (others + ahead < request.tickets) {
      return {
        acquired: false,
        holders,
        retryInMs,
        ahead,
        wait: promotionGraceWait(this.maxLeaseMs),
      }
    }
    return { acquired: false, holders, retryInMs, ahead }
  }

  async renew(requests: RenewRequest[]): Promise<boolean[]> {
    this.#checkOpen()
    if (!Array.isArray(requests)) {
      throw new OptionsError('requests', requests, 'renew() takes an array of renew requests.')
    }
    for (const request of requests) {
      validateRenew(request)
      checkLeaseWithin('postgres', request.leaseMs, this.maxLeaseMs)
    }
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
        this.#synchronousCommit,
      ],
      `renewal of ${unique.length} grants`,
    )
    const renewed = new Set(rows.map((r) => Number(r.i) - 1))
    return slots.map((slot) => renewed.has(slot))
  }

  async release(request: ReleaseRequest): Promise<void> {
    this.#checkOpen()
    validateRelease(request)
    if (request.token === undefined || request.token === null)
      this.#places.delete(`${request.resource}\n${request.candidate}`)
    await this.#query(
      this.#sql.release,
      [
        request.resource,
        request.candidate,
        request.token ?? null,
        this.#synchronousCommit,
        // A release hands the freed ticket on, but not within a promotion's grace.
        this.maxLeaseMs,
      ],
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

  /**
   * Backend.waiters: the live places of the waiters table (migration 5) in line order, with
   * what is left of each on the database clock. Read-only; places carry no metadata.
   */
  async waiters(resource: string): Promise<Waiter[]> {
    this.#checkOpen()
    validateResource(resource)
    const rows = await this.#query<WaiterRow>(
      this.#sql.waiters,
      [resource],
      `waiters of "${resource}"`,
    )
    return rows.map((r) => ({ candidate: r.candidate, remainingMs: Number(r.remaining_ms) }))
  }

  async watch(resource: string, onChange: (change?: WatchChange) => void): Promise<Unwatch> {
    this.#checkOpen()
    validateResource(resource)
    if (typeof onChange !== 'function') {
      throw new OptionsError('onChange', onChange, 'watch() takes a function to call on changes.')
    }
    // Registered before LISTEN completes, so nothing pushed after that point is missed.
    const remove = this.#listener.add(resource, (change) => onChange(this.#ours(resource, change)))
    try {
      await this.#listener.ready()
    } catch (error) {
      remove()
      this.#gate.check() // cut by close(): say so, finally
      throw error
    }
    return unwatchOnce(remove)
  }

  /**
   * A change as its watchers see it: of the grants a release made, only those for the place
   * this backend's acquire last took for its candidate (a grant for an older place, say of a
   * campaign since withdrawn, was not made for the ask the waiter now counts from).
   */
  #ours(resource: string, change: PlacedChange | undefined): WatchChange | undefined {
    if (!change?.granted) return change
    const granted = change.granted
      .filter((g) => this.#places.get(`${resource}\n${g.candidate}`) === g.place)
      .map((g) => ({ candidate: g.candidate, token: g.token }))
    return granted.length ? { wake: change.wake, granted } : { wake: change.wake }
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

  /** Backend.readRecord: a row of the records table (migration 003). */
  async readRecord(resource: string, key: string): Promise<StoredRecord | undefined> {
    this.#checkOpen()
    validateResource(resource)
    validateRecordKey(key)
    const sql = (this.#recordSql ??= recordStatements(this.schema))
    const [row] = await this.#query<RecordRow>(sql.read, [resource, key], 'readRecord')
    return toRecord(row)
  }

  /** Backend.writeRecord: the fenced compare-and-set of sql/write-record.sql. */
  async writeRecord(request: WriteRecordRequest): Promise<WriteRecordResult> {
    this.#checkOpen()
    validateWriteRecord(request)
    const sql = (this.#recordSql ??= recordStatements(this.schema))
    const [row] = await this.#query<WriteRow>(
      sql.write,
      [
        request.resource,
        request.key,
        JSON.stringify(request.value),
        request.token,
        request.version,
        this.#synchronousCommit,
      ],
      'writeRecord',
    )
    return toWriteResult(row!)
  }

  /** Backend.now: clock_timestamp(), so fire times do not depend on this host's clock. */
  async now(): Promise<number> {
    this.#checkOpen()
    const sql = (this.#recordSql ??= recordStatements(this.schema))
    const [row] = await this.#query<{ now_ms: number }>(sql.now, [], 'now')
    return Number(row!.now_ms)
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
    this.#migrated ??= prepareSchema(
      this.#pool,
      this.schema,
      this.#timeoutMs,
      this.#autoMigrate,
    ).catch((error: unknown) => {
      this.#migrated = undefined
      throw error
    })
    return this.#migrated
  }
}

/** A token as pg returns it (bigint: a string) as a number, refusing one that is not safe. */
function toToken(value: unknown, what: string): number {
  const token = typeof value === 'number' ? value : Number(value)
  if (!Number.isSafeInteger(token) || token < 1) {
    throw new BackendError(
      `postgres: ${what} returned a token that is not a safe integer: ${describe(value)}`,
    )
  }
  return token
}

/** Why nothing is granted on a database that was promoted less than a lease ago. */
function promotionGraceWait(graceMs: number): WaitReason {
  return {
    code: 'promotion-grace',
    reason: `the database started a new WAL timeline (a standby was promoted, or a point-in-time recovery) less than the longest lease (maxLeaseMs, ${graceMs} ms) ago, and it may have missed grants whose holders still run: no new grant until then (see docs/postgres.md)`,
  }
}
