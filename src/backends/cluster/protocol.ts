/**
 * The hub protocol: how a process asks a backend in another process to act, over any
 * message transport (node:cluster IPC today; a unix socket for the `local` backend later).
 * Every message carries `[namespace]: 1` so conclave's traffic shares a channel with the
 * application's own messages; a message without it is not ours and is ignored.
 *
 *   request  { [ns]: 1, type: 'request', id, op, args }
 *   response { [ns]: 1, type: 'response', id, ok: true, value }
 *            { [ns]: 1, type: 'response', id, ok: false, error: { name, message, code, ...fields } }
 *   event    { [ns]: 1, type: 'event', watch }          (the holders of a watched resource changed)
 */
import {
  BackendClosedError,
  BackendError,
  ConclaveError,
  LeadershipLostError,
  MissingPeerError,
  OptionsError,
  ProtocolError,
  type TermEndReason,
  TicketsMismatchError,
  WorkError,
} from '../../errors.js'

export const NAMESPACE = 'conclave'
export const OPS = ['acquire', 'renew', 'release', 'holders', 'watch', 'unwatch'] as const
export type Op = (typeof OPS)[number]

export interface RequestMessage {
  type: 'request'
  id: string
  op: Op
  args: unknown
}
export interface ResponseMessage {
  type: 'response'
  id: string | null
  ok: boolean
  value?: unknown
  error?: WireError
}
export interface EventMessage {
  type: 'event'
  watch: string
}
/**
 * An error as it crosses the wire: its name, message and stable `code`, plus the fields of
 * conclave's own error classes (kept only when they are plain JSON), so the receiving side can
 * rebuild the same class (see `fromWire`).
 */
export interface WireError {
  name: string
  message: string
  code?: string
  /** OptionsError */
  field?: string
  value?: unknown
  rule?: string
  /** TicketsMismatchError, LeadershipLostError, WorkError */
  resource?: string
  tickets?: number
  held?: number
  token?: number
  reason?: string
  /** MissingPeerError */
  peer?: string
}

const MAX_ID = 128

export function isOurs(message: unknown, ns: string): message is Record<string, unknown> {
  return (
    typeof message === 'object' &&
    message !== null &&
    (message as Record<string, unknown>)[ns] === 1
  )
}

export function envelope<T extends object>(ns: string, body: T): T & Record<string, 1> {
  return { [ns]: 1, ...body }
}

export function isId(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0 && value.length <= MAX_ID
}

/** Checks a request's envelope; args are checked by the backend call itself. */
export function parseRequest(message: Record<string, unknown>): RequestMessage {
  if (message.type !== 'request') {
    throw new ProtocolError(
      `Invalid message type: ${JSON.stringify(message.type)}. A hub accepts only "request" messages.`,
    )
  }
  if (!isId(message.id)) {
    throw new ProtocolError(
      `Invalid request id: ${JSON.stringify(message.id)}. An id is a string of 1 to ${MAX_ID} characters.`,
    )
  }
  if (typeof message.op !== 'string' || !(OPS as readonly string[]).includes(message.op)) {
    throw new ProtocolError(
      `Invalid op: ${JSON.stringify(message.op)}. Known ops: ${OPS.join(', ')}.`,
    )
  }
  return { type: 'request', id: message.id, op: message.op as Op, args: message.args }
}

/** The fields of conclave's error classes that `fromWire` uses to rebuild them. */
const FIELDS = ['field', 'value', 'rule', 'resource', 'tickets', 'held', 'token', 'reason', 'peer']

/** An error as a plain object any IPC serialization carries: name, message, code and fields. */
export function toWire(error: unknown): WireError {
  if (!(error instanceof Error)) return { name: 'Error', message: String(error) }
  const code = (error as { code?: unknown }).code
  const wire: WireError = {
    name: error.name,
    message: error.message,
    ...(typeof code === 'string' ? { code } : {}),
  }
  if (typeof code === 'string' && code.startsWith('ERR_CONCLAVE_')) {
    const own = error as unknown as Record<string, unknown>
    for (const key of FIELDS) {
      const value = plainJson(own[key])
      if (value !== undefined) (wire as unknown as Record<string, unknown>)[key] = value
    }
  }
  return wire
}

/** `value` if it survives JSON unchanged in meaning (so both serializations carry it), else undefined. */
function plainJson(value: unknown): unknown {
  if (value === undefined) return undefined
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return value
  if (typeof value === 'number') return Number.isFinite(value) ? value : undefined
  try {
    const text = JSON.stringify(value)
    return text === undefined || text.length > 4096 ? undefined : (JSON.parse(text) as unknown)
  } catch {
    return undefined
  }
}

const str = (v: unknown, fallback = ''): string => (typeof v === 'string' ? v : fallback)
const num = (v: unknown): number => (typeof v === 'number' ? v : Number.NaN)
const REASONS: readonly string[] = ['resigned', 'expired', 'lost', 'closed']

/**
 * Rebuilds a remote error: conclave's own classes by their code (TicketsMismatchError,
 * OptionsError, LeadershipLostError, WorkError, MissingPeerError, BackendClosedError,
 * BackendError, ProtocolError) with their fields, anything else as a ConclaveError with the
 * remote name and code (`ERR_CONCLAVE_REMOTE` without one). The message is the remote one plus
 * where it came from; the `code` is always the remote one, so a final error stays final.
 */
export function fromWire(wire: unknown, where: string): Error {
  const w = (typeof wire === 'object' && wire !== null ? wire : {}) as Partial<WireError>
  const message = `${typeof w.message === 'string' ? w.message : 'unknown error'} (from ${where})`
  const code = typeof w.code === 'string' ? w.code : 'ERR_CONCLAVE_REMOTE'
  let error: ConclaveError
  switch (code) {
    case 'ERR_CONCLAVE_TICKETS_MISMATCH':
      error = new TicketsMismatchError(str(w.resource), num(w.tickets), num(w.held))
      break
    case 'ERR_CONCLAVE_OPTIONS':
      error = new OptionsError(str(w.field, 'unknown'), w.value, str(w.rule))
      break
    case 'ERR_CONCLAVE_LEADERSHIP_LOST':
      error = new LeadershipLostError(
        str(w.resource),
        num(w.token),
        (REASONS.includes(str(w.reason)) ? w.reason : 'lost') as TermEndReason,
      )
      break
    case 'ERR_CONCLAVE_WORK':
      error = new WorkError(str(w.resource), num(w.token), new Error(str(w.message)))
      break
    case 'ERR_CONCLAVE_MISSING_PEER':
      error = new MissingPeerError(str(w.peer), where)
      break
    case 'ERR_CONCLAVE_CLOSED':
      error =
        w.name === 'BackendClosedError'
          ? new BackendClosedError(where)
          : new ConclaveError(code, message)
      break
    case 'ERR_CONCLAVE_BACKEND':
    case 'ERR_CONCLAVE_TIMEOUT':
      error = new BackendError(message, { code })
      break
    case 'ERR_CONCLAVE_PROTOCOL':
      error = new ProtocolError(message)
      break
    default:
      error = new ConclaveError(code, message)
  }
  // The remote words, not the local constructor's rebuilt ones (which could differ).
  error.message = message
  if (typeof w.name === 'string') error.name = w.name
  return error
}
