/**
 * The storage contract. A backend stores grants and answers questions about them; it never
 * decides timing (when to renew, when a term ends): that policy lives in the election core.
 *
 * Every backend must pass `test/conformance/`. Rules every implementation keeps:
 * - Expiry is measured on the backend's own clock, starting when it executes the request.
 * - `acquire` by a candidate that already holds the resource extends that grant and returns
 *   its token (so a retried acquire whose first answer was lost is harmless).
 * - Tokens of a resource only grow; a renewal keeps its token.
 * - `release` is idempotent and removes only the grant with the given token (or, without a
 *   token, whatever this candidate has on the resource, queued or held).
 * - A resource's grants remember the `tickets` they were made with; an acquire asking for
 *   another number while any grant lives is refused with a TicketsMismatchError.
 * - `close()` first awaits every `onClose` hook (the core ends the terms held through the
 *   backend there, and releases their grants while calls still work), and only then gives
 *   anything up; after that every call fails with a BackendClosedError (`ERR_CONCLAVE_CLOSED`),
 *   which the core never retries. `CloseGate` in `backends/kit.ts` does this for a backend.
 */
import { OptionsError } from './errors.js'

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json }

export interface Holder {
  candidate: string
  token: number
  metadata: Json
  /** Milliseconds until the grant expires on the backend's clock, when the backend answered. */
  remainingMs: number
}

export interface AcquireRequest {
  resource: string
  candidate: string
  /** How many holders the resource may have at once. All candidates of a resource must agree. */
  tickets: number
  leaseMs: number
  metadata: Json
}

export type AcquireResult =
  | { acquired: true; token: number; holders: Holder[] }
  | {
      acquired: false
      holders: Holder[]
      /** When a grant can next free up (the earliest holder's remaining time), in ms. */
      retryInMs: number
    }

export interface RenewRequest {
  resource: string
  candidate: string
  token: number
  leaseMs: number
}

export interface ReleaseRequest {
  resource: string
  candidate: string
  /** Without a token: withdraw whatever this candidate has on the resource (held or queued). */
  token?: number
}

/** Stops a watch. */
export type Unwatch = () => Promise<void>

export interface Backend {
  /** A short name for messages: `memory`, `cluster`, `redis`, ... */
  readonly name: string
  acquire(request: AcquireRequest): Promise<AcquireResult>
  /**
   * Renew many grants in one round trip. One boolean per request, in order: `true` when the
   * grant still existed with that token and now runs a fresh `leaseMs`, `false` when it is gone.
   * A rejection means "unknown": the election keeps its deadline and retries.
   */
  renew(requests: RenewRequest[]): Promise<boolean[]>
  release(request: ReleaseRequest): Promise<void>
  /** The unexpired holders of a resource, ordered by token. */
  holders(resource: string): Promise<Holder[]>
  /**
   * Call `onChange` (with no promise of exactly-once) whenever the holders of `resource` may
   * have changed by a release or an acquire. Resolves once the watch is in place, so a
   * release after that is never missed. Expiry need not be pushed: callers schedule their
   * own wake-up from `remainingMs`/`retryInMs`.
   */
  watch(resource: string, onChange: () => void): Promise<Unwatch>
  /**
   * Registers a hook that `close()` runs and awaits before it gives anything up (the election
   * core ends its terms there). Returns a function that removes the hook.
   */
  onClose(hook: () => Promise<void>): () => void
  /** Runs the `onClose` hooks, then closes; idempotent. Calls after it fail with ERR_CONCLAVE_CLOSED. */
  close(): Promise<void>
}

// Shared input rules, checked by the core at construction and by every backend on each call.

const RESOURCE = /^[A-Za-z0-9_.@=:-]+(\/[A-Za-z0-9_.@=:-]+)*$/
export const MAX_RESOURCE_LENGTH = 200
const CANDIDATE = /^[\x21-\x7e]+$/
export const MAX_CANDIDATE_LENGTH = 200
export const MAX_METADATA_BYTES = 4096
export const MAX_TICKETS = 10_000

export function validateResource(resource: unknown, field = 'resource'): string {
  if (
    typeof resource !== 'string' ||
    resource.length === 0 ||
    resource.length > MAX_RESOURCE_LENGTH ||
    !RESOURCE.test(resource)
  ) {
    throw new OptionsError(
      field,
      resource,
      `A resource name is 1 to ${MAX_RESOURCE_LENGTH} characters of letters, digits and . _ - : @ =, in segments separated by single slashes (e.g. "reports/nightly").`,
    )
  }
  return resource
}

export function validateCandidate(candidate: unknown, field = 'candidate'): string {
  if (
    typeof candidate !== 'string' ||
    candidate.length === 0 ||
    candidate.length > MAX_CANDIDATE_LENGTH ||
    !CANDIDATE.test(candidate)
  ) {
    throw new OptionsError(
      field,
      candidate,
      `A candidate id is 1 to ${MAX_CANDIDATE_LENGTH} printable ASCII characters without spaces.`,
    )
  }
  return candidate
}

export function validateTickets(tickets: unknown, field = 'tickets'): number {
  if (!Number.isInteger(tickets) || (tickets as number) < 1 || (tickets as number) > MAX_TICKETS) {
    throw new OptionsError(field, tickets, `tickets must be an integer from 1 to ${MAX_TICKETS}.`)
  }
  return tickets as number
}

export function validateLeaseMs(leaseMs: unknown, field = 'leaseMs'): number {
  if (!Number.isInteger(leaseMs) || (leaseMs as number) < 10 || (leaseMs as number) > 2 ** 31 - 1) {
    throw new OptionsError(
      field,
      leaseMs,
      'leaseMs must be an integer number of milliseconds from 10 to 2147483647.',
    )
  }
  return leaseMs as number
}

export function validateToken(token: unknown, field = 'token'): number {
  if (!Number.isSafeInteger(token) || (token as number) < 1) {
    throw new OptionsError(field, token, 'A token is a positive safe integer.')
  }
  return token as number
}

/** Metadata must be plain JSON (what every backend can store) and small. */
export function validateMetadata(metadata: unknown, field = 'metadata'): Json {
  if (metadata === undefined) return null
  let text: string | undefined
  try {
    text = JSON.stringify(metadata)
  } catch {
    text = undefined
  }
  if (text === undefined || !isPlainJson(metadata)) {
    throw new OptionsError(
      field,
      metadata,
      'metadata must be a plain JSON value (objects, arrays, strings, finite numbers, booleans, null).',
    )
  }
  if (Buffer.byteLength(text) > MAX_METADATA_BYTES) {
    throw new OptionsError(
      field,
      metadata,
      `metadata must serialise to at most ${MAX_METADATA_BYTES} bytes of JSON (it is ${Buffer.byteLength(text)}).`,
    )
  }
  return metadata as Json
}

function isPlainJson(value: unknown, depth = 0): boolean {
  if (depth > 32) return false
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return true
  if (typeof value === 'number') return Number.isFinite(value)
  if (Array.isArray(value)) return value.every((v) => isPlainJson(v, depth + 1))
  if (typeof value === 'object') {
    const proto = Object.getPrototypeOf(value) as unknown
    if (proto !== Object.prototype && proto !== null) return false
    return Object.values(value).every((v) => isPlainJson(v, depth + 1))
  }
  return false
}

export function validateAcquire(request: AcquireRequest): void {
  validateResource(request.resource)
  validateCandidate(request.candidate)
  validateTickets(request.tickets)
  validateLeaseMs(request.leaseMs)
  validateMetadata(request.metadata)
}

export function validateRenew(request: RenewRequest): void {
  validateResource(request.resource)
  validateCandidate(request.candidate)
  validateToken(request.token)
  validateLeaseMs(request.leaseMs)
}

export function validateRelease(request: ReleaseRequest): void {
  validateResource(request.resource)
  validateCandidate(request.candidate)
  if (request.token !== undefined) validateToken(request.token)
}
