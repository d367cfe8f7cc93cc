/**
 * The storage contract. A backend stores grants and answers questions about them; it never
 * decides timing (when to renew, when a term ends): that policy lives in the election core.
 *
 * Every backend must pass `test/conformance/`. Rules every implementation keeps:
 * - Expiry is measured on the backend's own clock, starting when it executes the request.
 * - `acquire` by a candidate that already holds the resource extends that grant and returns
 *   its token (so a retried acquire whose first answer was lost is harmless); a backend may
 *   refuse it instead, the grant untouched, while a grace says it may lack later grants.
 * - Tokens of a resource only grow; a renewal keeps its token.
 * - `release` is idempotent and removes only the grant with the given token (or, without a
 *   token, whatever this candidate has on the resource, queued or held).
 * - First come, first served: an acquire that is not granted puts the candidate in the
 *   resource's line (at the end, or where it already stands) and answers `ahead`. A free ticket
 *   goes only to a candidate with `held + ahead < tickets`, so a late asker never overtakes the
 *   line. A place lives `leaseMs` (the asker's) on the backend's clock after its last acquire
 *   or keep (a `queued` renew); an expired place is skipped as if it never stood there.
 * - A release wakes only the waiters it frees a ticket for: watchers get a `WatchChange` whose
 *   `wake` names the first waiters in line (or is absent when the backend cannot tell).
 * - A resource's grants remember the `tickets` they were made with; an acquire asking for
 *   another number while any grant lives is refused with a TicketsMismatchError.
 * - `close()` first awaits every `onClose` hook (the core ends the terms held through the
 *   backend there, and releases their grants while calls still work), and only then gives
 *   anything up; after that every call fails with a BackendClosedError (`ERR_CONCLAVE_CLOSED`),
 *   which the core never retries. `CloseGate` in `backends/kit.ts` does this for a backend.
 */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json }

/** A grant that holds a resource, as a backend reports it. */
export interface Holder {
  candidate: string
  token: number
  metadata: Json
  /** Milliseconds until the grant expires on the backend's clock, when the backend answered. */
  remainingMs: number
}

/**
 * A candidate waiting for a resource, as a backend that keeps a queue reports it (the
 * optional `Backend.waiters`). Only what the backend knows: no token (a waiter has none yet).
 */
export interface Waiter {
  candidate: string
  /** The metadata its campaign published, when the backend keeps it. */
  metadata?: Json
  /**
   * Milliseconds until its place in the queue lapses on the backend's clock unless its
   * candidate asks again (a live campaign keeps renewing it), when the backend knows.
   */
  remainingMs?: number
}

/** What a candidate asks for: a grant on `resource` for `leaseMs`, published with `metadata`. */
export interface AcquireRequest {
  resource: string
  candidate: string
  /** How many holders the resource may have at once. All candidates of a resource must agree. */
  tickets: number
  leaseMs: number
  metadata: Json
}

/** The answer to an acquire: the grant and its fencing token, or the holders and when to retry. */
export type AcquireResult =
  | { acquired: true; token: number; holders: Holder[] }
  | {
      acquired: false
      holders: Holder[]
      /** When a grant can next free up (the earliest holder's remaining time), in ms. */
      retryInMs: number
      /**
       * Waiters in the resource's line before this candidate, alive at the answer (0: it is
       * first). Backends that keep a line (every backend conclave ships) set it; without it the
       * candidate is treated as first.
       */
      ahead?: number
      /**
       * Set when a ticket is free but the backend will not grant it yet (a grace after a
       * restart, a promotion or a failover; keys deleted by hand): why, and `retryInMs` is
       * when that wait ends. Without it the candidate waits because every ticket is held.
       */
      wait?: WaitReason
    }

/** Why a backend grants nothing although a ticket is free (AcquireResult's `wait`). */
export interface WaitReason {
  /** A short stable code, kebab-case: `startup-grace`, `failover-grace`, `promotion-grace`... */
  code: string
  /** One sentence for people: what the backend waits for and why. */
  reason: string
}

/**
 * Extends the grant `candidate` holds with `token` by a fresh `leaseMs`; or, with `queued`,
 * keeps its place in the resource's line for a fresh `leaseMs` (`token` is 0 then).
 */
export interface RenewRequest {
  resource: string
  candidate: string
  token: number
  leaseMs: number
  /**
   * Keep a place in line instead of a grant. The answer is `true` while the place lives and no
   * ticket is free for it, `false` when the candidate should ask again now (its place is gone,
   * or `held + ahead < tickets`: a ticket is free for it).
   */
  queued?: true
}

/** Gives a grant back (or withdraws a queued candidate). */
export interface ReleaseRequest {
  resource: string
  candidate: string
  /** Without a token: withdraw whatever this candidate has on the resource (held or queued). */
  token?: number
}

/** Stops a watch. */
export type Unwatch = () => Promise<void>

/** What a watch notification knows of the change (see `Backend.watch`). */
export interface WatchChange {
  /**
   * The candidates the change concerns: after a release or a withdrawal, the first waiters in
   * line that a freed ticket now goes to; `[]` for a change that frees no ticket (a grant, a
   * metadata change). Absent: unknown, so every waiter asks again.
   */
  wake?: string[]
  /**
   * Grants the change itself made to waiters in line (a release handing its freed ticket to the
   * next in line, on backends that do). A backend names a grant here only to the process whose
   * refused, queued acquire placed that candidate in line, and only when the grant lasts at least
   * the candidate's lease from the moment that acquire was sent: so the waiter may hold it at
   * once, with that deadline, without asking again (it renews it as any grant). Absent: none.
   */
  granted?: { candidate: string; token: number }[]
  /**
   * Grants the change ended: their records are gone (a release, an operator's delete, a lease
   * the server revoked). The holder of one ends its term on this alone, with no round trip
   * more, so it steps down before a waiter woken by the same change can have asked. Absent:
   * unknown (the holder reads the holders to find out). Only ever names grants that are gone.
   */
  ended?: EndedGrant[]
}

/** A grant a change ended (see `WatchChange.ended`). */
export interface EndedGrant {
  candidate: string
  token: number
}

/**
 * Where grants live: Redis, PostgreSQL, etcd, node:cluster IPC, memory. The rules every
 * implementation keeps are at the top of this file, and test/conformance checks them.
 */
export interface Backend {
  /** A short name for messages: `memory`, `cluster`, `redis`, ... */
  readonly name: string
  /**
   * Grants the resource if fewer than `tickets` hold it (or extends the candidate's own grant,
   * keeping its token); otherwise reports the holders and when to ask again.
   */
  acquire(request: AcquireRequest): Promise<AcquireResult>
  /**
   * Renew many grants in one round trip. One boolean per request, in order: `true` when the
   * grant still existed with that token and now runs a fresh `leaseMs`, `false` when it is gone.
   * A rejection means "unknown": the election keeps its deadline and retries.
   */
  renew(requests: RenewRequest[]): Promise<boolean[]>
  /** Removes the grant with that token (idempotent), so a waiter can win at once. */
  release(request: ReleaseRequest): Promise<void>
  /** The unexpired holders of a resource, ordered by token. */
  holders(resource: string): Promise<Holder[]>
  /**
   * Optional: the candidates queued for a resource, in the order they would be granted, for
   * people and tools (`conclave status`); never used to decide a grant. Only a backend that
   * keeps a queue has it (etcd: keys ranked by create revision); without it, the waiting
   * candidates are known only to themselves.
   */
  waiters?(resource: string): Promise<Waiter[]>
  /**
   * Call `onChange` (with no promise of exactly-once) whenever the holders of `resource` may
   * have changed by a release or an acquire. Resolves once the watch is in place, so a
   * release after that is never missed. Expiry need not be pushed: callers schedule their
   * own wake-up from `remainingMs`/`retryInMs`. The `change` says whom it concerns when the
   * backend knows (a waiter not named in `wake` need not ask again).
   */
  watch(resource: string, onChange: (change?: WatchChange) => void): Promise<Unwatch>
  /**
   * Registers a hook that `close()` runs and awaits before it gives anything up (the election
   * core ends its terms there). Returns a function that removes the hook.
   */
  onClose(hook: () => Promise<void>): () => void
  /** Runs the `onClose` hooks, then closes; idempotent. Calls after it fail with ERR_CONCLAVE_CLOSED. */
  close(): Promise<void>
  /**
   * Optional record store (see RecordStore): what `schedule()` keeps its last and running fire
   * in. Every backend conclave ships has it but `local`.
   */
  readRecord?(resource: string, key: string): Promise<StoredRecord | undefined>
  /** Optional: the fenced compare-and-set of RecordStore. */
  writeRecord?(request: WriteRecordRequest): Promise<WriteRecordResult>
  /**
   * Optional: the backend's wall clock, in ms since the epoch (Redis `TIME`, PostgreSQL
   * `clock_timestamp()`), so that time-of-day decisions do not depend on a host's clock.
   */
  now?(): Promise<number>
}

/** A small JSON value kept per (resource, key) beside the grants. */
export interface StoredRecord {
  value: Json
  /** The fencing token of the last write. */
  token: number
  /** Grows with every write (opaque otherwise); 0 never names a stored record. */
  version: number
}

/** A writeRecord call: the new value, the writer's fencing token, and the version it read. */
export interface WriteRecordRequest {
  resource: string
  key: string
  value: Json
  /** The writer's fencing token: a write with a token below the record's is refused. */
  token: number
  /** The version the writer read (0: it read no record). Any other version refuses the write. */
  version: number
}

/** What writeRecord did: written (and the new version), or refused (and the record that won). */
export type WriteRecordResult =
  { written: true; version: number } | { written: false; current: StoredRecord | undefined }

/**
 * A fenced compare-and-set per (resource, key): `writeRecord` succeeds only when the record is
 * still at the version the writer read AND the writer's token is at least the token of the last
 * write. So a paused ex-leader can neither overwrite what a newer term wrote nor slip a write in
 * between a newer term's read and its write. Records never expire; keys are short names
 * (validated like resources).
 */
export interface RecordStore {
  /** The record of (resource, key), or undefined when none was written. */
  readRecord(resource: string, key: string): Promise<StoredRecord | undefined>
  /** Writes when the version is still the one read and the token is at least the last writer's. */
  writeRecord(request: WriteRecordRequest): Promise<WriteRecordResult>
}

// The input rules every backend checks on each call live in validate.ts; re-exported here for
// backends written against this file.
export {
  MAX_CANDIDATE_LENGTH,
  MAX_METADATA_BYTES,
  MAX_RESOURCE_LENGTH,
  MAX_TICKETS,
  validateAcquire,
  validateCandidate,
  validateLeaseMs,
  validateMetadata,
  validateRelease,
  validateRenew,
  validateResource,
  validateTickets,
  validateToken,
} from './validate.js'
