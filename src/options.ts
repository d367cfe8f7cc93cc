import { hostname } from 'node:os'
import { randomBytes } from 'node:crypto'
import type { Json } from './backend.js'
import { type Clock, systemClock } from './clock.js'
import { OptionsError } from './errors.js'
import {
  checkOptions,
  milliseconds,
  validateCandidate,
  validateLeaseMs,
  validateMetadata,
  validateTickets,
} from './validate.js'

/** Options of `new Election(backend, resource, options)`; every one is optional. */
export interface ElectionOptions {
  /** How long a grant lives on the backend without renewal. Default 15000. */
  leaseMs?: number
  /** How often the holder renews. Default leaseMs / 3. */
  renewMs?: number
  /** Base of the jittered backoff after a backend error. Default leaseMs / 30 (at least 10). */
  retryMs?: number
  /** How much earlier than the backend's expiry the holder ends its term. Default leaseMs / 20. */
  marginMs?: number
  /** How long close()/loss waits for the leader's work before releasing. Default 5000. */
  drainMs?: number
  /** How many candidates may hold the resource at once. Default 1. */
  tickets?: number
  /** This candidate's id. Default `hostname:pid:random`. Must be unique among candidates. */
  id?: string
  /** A small JSON value published with the grant (e.g. this process's URL). */
  metadata?: Json
  /** Monotonic clock for all timing; inject a manual clock in tests. */
  clock?: Clock
}

/** The options an election runs with: the given ones checked, the defaults filled in. */
export interface ResolvedOptions {
  leaseMs: number
  renewMs: number
  retryMs: number
  marginMs: number
  drainMs: number
  tickets: number
  id: string
  metadata: Json
  clock: Clock
}

const KNOWN = [
  'leaseMs',
  'renewMs',
  'retryMs',
  'marginMs',
  'drainMs',
  'tickets',
  'id',
  'metadata',
  'clock',
]

export function defaultCandidateId(): string {
  return `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`
}

/** Applies defaults and checks every rule; throws an OptionsError naming the first broken one. */
export function resolveOptions(options: ElectionOptions = {}): ResolvedOptions {
  checkOptions(options, KNOWN, 'election')
  const leaseMs = options.leaseMs === undefined ? 15_000 : validateLeaseMs(options.leaseMs)
  const marginMs =
    options.marginMs === undefined
      ? Math.max(1, Math.round(leaseMs / 20))
      : milliseconds('marginMs', options.marginMs, 0)
  const renewMs =
    options.renewMs === undefined
      ? Math.max(1, Math.floor(leaseMs / 3))
      : milliseconds('renewMs', options.renewMs, 1)
  const retryMs =
    options.retryMs === undefined
      ? Math.min(renewMs, Math.max(10, Math.round(leaseMs / 30)))
      : milliseconds('retryMs', options.retryMs, 1)
  const drainMs =
    options.drainMs === undefined ? 5_000 : milliseconds('drainMs', options.drainMs, 0)
  if (leaseMs <= renewMs + marginMs) {
    throw new OptionsError(
      options.renewMs !== undefined ? 'renewMs' : 'marginMs',
      options.renewMs !== undefined ? renewMs : marginMs,
      `leaseMs must exceed renewMs + marginMs (${leaseMs} <= ${renewMs} + ${marginMs}).`,
      'Lower renewMs or marginMs, or raise leaseMs.',
    )
  }
  if (retryMs > renewMs) {
    throw new OptionsError(
      'retryMs',
      retryMs,
      `retryMs must not exceed renewMs (${renewMs}), or a failed renewal is retried too late.`,
    )
  }
  const tickets = options.tickets === undefined ? 1 : validateTickets(options.tickets)
  const id = options.id === undefined ? defaultCandidateId() : validateCandidate(options.id, 'id')
  const metadata = validateMetadata(options.metadata)
  const clock = options.clock ?? systemClock
  if (
    typeof clock.now !== 'function' ||
    typeof clock.setTimeout !== 'function' ||
    typeof clock.clearTimeout !== 'function'
  ) {
    throw new OptionsError(
      'clock',
      clock,
      'A clock has now(), setTimeout(fn, ms) and clearTimeout(timer).',
    )
  }
  return { leaseMs, renewMs, retryMs, marginMs, drainMs, tickets, id, metadata, clock }
}

/** Jittered exponential backoff: a random delay in [base/2, base * 2^attempt], capped. */
export function backoff(
  attempt: number,
  baseMs: number,
  capMs: number,
  random = Math.random,
): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 16))
  const floor = Math.min(ceiling, baseMs / 2)
  return floor + random() * (ceiling - floor)
}
