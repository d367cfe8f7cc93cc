import { inspect } from 'node:util'

/** Every error conclave throws has a stable `code`, so callers can branch without parsing text. */
export class ConclaveError extends Error {
  readonly code: string
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
    this.code = code
  }
}

/** A bad option, resource name, URL or flag: names the field, the value and the rule. */
export class OptionsError extends ConclaveError {
  readonly field: string
  readonly value: unknown
  readonly rule: string
  constructor(field: string, value: unknown, rule: string, hint?: string) {
    super(
      'ERR_CONCLAVE_OPTIONS',
      `Invalid ${field}: ${describe(value)}. ${rule}${hint ? ` ${hint}` : ''}`,
    )
    this.field = field
    this.value = value
    this.rule = rule
  }
}

export type TermEndReason = 'resigned' | 'expired' | 'lost' | 'closed'

/** Thrown by `term.assertActive()` and used as the reason of an ended term's signal. */
export class LeadershipLostError extends ConclaveError {
  readonly reason: TermEndReason
  readonly resource: string
  readonly token: number
  constructor(resource: string, token: number, reason: TermEndReason) {
    super(
      'ERR_CONCLAVE_LEADERSHIP_LOST',
      `Term ${token} on "${resource}" has ended (${reason}); stop acting as its leader.`,
    )
    this.reason = reason
    this.resource = resource
    this.token = token
  }
}

/** The election was closed; nothing more can be started on it. */
export class ElectionClosedError extends ConclaveError {
  constructor(resource: string) {
    super('ERR_CONCLAVE_CLOSED', `The election on "${resource}" is closed.`)
  }
}

/** A second campaign was started while one is still pending on the same election. */
export class BusyError extends ConclaveError {
  constructor(resource: string, what: string) {
    super('ERR_CONCLAVE_BUSY', `The election on "${resource}" is already ${what}.`)
  }
}

/** A backend call failed (connection, timeout, protocol); retried by the election core. */
export class BackendError extends ConclaveError {
  constructor(message: string, options?: { cause?: unknown; code?: string }) {
    super(options?.code ?? 'ERR_CONCLAVE_BACKEND', message, options)
  }
}

/** The backend was closed: final, never retried (the core ends its terms before it closes). */
export class BackendClosedError extends ConclaveError {
  constructor(backend: string) {
    super('ERR_CONCLAVE_CLOSED', `The ${backend} backend is closed.`)
  }
}

/**
 * A candidate asked for a different number of tickets than the resource's current grants were
 * made with. Final: the campaign rejects with it; the limit is never raised.
 */
export class TicketsMismatchError extends ConclaveError {
  readonly resource: string
  /** What this candidate asked for. */
  readonly tickets: number
  /** What the resource's current grants were made with. */
  readonly held: number
  constructor(resource: string, tickets: number, held: number) {
    super(
      'ERR_CONCLAVE_TICKETS_MISMATCH',
      `"${resource}" is held with tickets ${held}; this candidate asked for tickets ${tickets}. All candidates of a resource must use the same tickets.`,
    )
    this.resource = resource
    this.tickets = tickets
    this.held = held
  }
}

/**
 * The leader's own work (a `run()` or `every()` callback) threw; the original is `cause`.
 * Reported on `error` like backend errors, but metrics and health keep it apart.
 */
export class WorkError extends ConclaveError {
  readonly resource: string
  readonly token: number
  constructor(resource: string, token: number, cause: unknown) {
    super(
      'ERR_CONCLAVE_WORK',
      `The work of term ${token} on "${resource}" threw: ${cause instanceof Error ? cause.message : describe(cause)}`,
      { cause },
    )
    this.resource = resource
    this.token = token
  }
}

/** An optional peer dependency (ioredis, pg, etcd3, prom-client) is not installed. */
export class MissingPeerError extends ConclaveError {
  readonly peer: string
  constructor(peer: string, what: string, options?: { cause?: unknown }) {
    super(
      'ERR_CONCLAVE_MISSING_PEER',
      `${what} needs the package "${peer}", which is not installed: npm install ${peer}`,
      options,
    )
    this.peer = peer
  }
}

/**
 * Codes whose errors calling again cannot fix: the core never retries them (a campaign
 * rejects with the error at once).
 */
export const FINAL_CODES: ReadonlySet<string> = new Set([
  'ERR_CONCLAVE_CLOSED',
  'ERR_CONCLAVE_TICKETS_MISMATCH',
  'ERR_CONCLAVE_OPTIONS',
  'ERR_CONCLAVE_MISSING_PEER',
])

/** True for an error calling again cannot fix (see FINAL_CODES). */
export function isFinal(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' && FINAL_CODES.has(code)
}

/** A malformed message on a conclave IPC channel. */
export class ProtocolError extends ConclaveError {
  constructor(message: string) {
    super('ERR_CONCLAVE_PROTOCOL', message)
  }
}

/** A short, readable rendering of a bad value for error messages (NaN, functions and all). */
export function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  const text = inspect(value, {
    depth: 3,
    breakLength: Infinity,
    maxArrayLength: 10,
    maxStringLength: 60,
  })
  return text.length > 80 ? `${text.slice(0, 77)}...` : text
}
