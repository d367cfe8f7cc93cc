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

/** A malformed message on a conclave IPC channel. */
export class ProtocolError extends ConclaveError {
  constructor(message: string) {
    super('ERR_CONCLAVE_PROTOCOL', message)
  }
}

export function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'bigint') return `${value}n`
  if (typeof value === 'function') return 'a function'
  if (value === undefined) return 'undefined'
  try {
    const text = JSON.stringify(value)
    if (text === undefined)
      return typeof value === 'symbol' ? value.toString() : 'a value JSON cannot show'
    return text.length > 80 ? `${text.slice(0, 77)}...` : text
  } catch {
    return 'a value JSON cannot show'
  }
}
