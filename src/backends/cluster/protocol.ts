/**
 * The hub protocol: how a process asks a backend in another process to act, over any
 * message transport (node:cluster IPC today; a unix socket for the `local` backend later).
 * Messages use conclave's shared envelope (src/ipc/envelope.ts): `[namespace]: 1` marks them,
 * so conclave's traffic shares a channel with the application's own messages, and errors cross
 * as its WireError.
 *
 *   request  { [ns]: 1, type: 'request', id, op, args }
 *   response { [ns]: 1, type: 'response', id, ok: true, value }
 *            { [ns]: 1, type: 'response', id, ok: false, error: WireError }
 *   event    { [ns]: 1, type: 'event', watch, wake?, granted? }
 *            (the holders of a watched resource changed; wake: whom it wakes, WatchChange.wake;
 *            granted: the grants a release handed to this peer's waiters, WatchChange.granted)
 *
 * `adopt` (a grant the peer held at a previous hub, re-registered at this one) is served only by
 * a hub made with the `adopt` option (the `local` backend's).
 */
import type { WatchChange } from '../../backend.js'
import { ProtocolError, RemoteHubError } from '../../errors.js'
import { MAX_CANDIDATE_LENGTH } from '../../validate.js'
import {
  isId,
  MAX_ID_LENGTH,
  type ReceivedError,
  type WireError,
  wireErrors,
} from '../../ipc/envelope.js'

/** The hub's message key (the agent uses another, so both share one channel). */
export const NAMESPACE = 'conclave'
/** The backend calls a hub serves. */
export const OPS = [
  'acquire',
  'renew',
  'release',
  'holders',
  'watch',
  'unwatch',
  // The local backend's re-registration of grants with a new hub.
  'adopt',
  // The optional record store and clock (Backend.readRecord/writeRecord/now).
  'readRecord',
  'writeRecord',
  'now',
] as const
/** One of OPS. */
export type Op = (typeof OPS)[number]

/** A worker asks the hub to run one backend call. */
export interface RequestMessage {
  type: 'request'
  id: string
  op: Op
  args: unknown
}
/** The hub's answer to one request (id null: the request had no usable id). */
export interface ResponseMessage {
  type: 'response'
  id: string | null
  ok: boolean
  value?: unknown
  error?: WireError
}
/** The holders of a watched resource changed. */
export interface EventMessage {
  type: 'event'
  watch: string
  /** The candidates the change wakes (WatchChange.wake); absent: unknown, everyone asks. */
  wake?: string[]
  /**
   * Grants a release made for this peer's places in line (WatchChange.granted): the waiter
   * holds without asking again. Sent only to the connection whose ask took the place.
   */
  granted?: { candidate: string; token: number }[]
}

/** How many candidates one event may name (far beyond any tickets in use). */
export const MAX_WAKE = 10_000

/** The event message the hub sends for one watch notification. */
export function eventMessage(watch: string, change: WatchChange | undefined): EventMessage {
  const event: EventMessage = { type: 'event', watch }
  if (change?.wake) event.wake = change.wake
  if (change?.granted?.length)
    event.granted = change.granted.map((g) => ({ candidate: g.candidate, token: g.token }))
  return event
}

/** A value as an error message shows it (JSON, cut short; what JSON cannot show, its type). */
function shown(value: unknown): string {
  try {
    return (JSON.stringify(value) ?? typeof value).slice(0, 200)
  } catch {
    return typeof value // a BigInt or a cycle, as advanced serialization can carry
  }
}

const isCandidate = (c: unknown): c is string =>
  typeof c === 'string' && c.length > 0 && c.length <= MAX_CANDIDATE_LENGTH

/**
 * Checks an event's fields (`type` is 'event'): a watch id, `wake` absent or an array of
 * candidate ids, `granted` absent or an array of { candidate, token }. Throws a ProtocolError
 * naming the field, its value and the rule.
 */
export function parseEvent(message: Record<string, unknown>): EventMessage {
  if (!isId(message.watch)) {
    throw new ProtocolError(
      `Invalid event watch: ${JSON.stringify(message.watch)}. A watch id is a string of 1 to ${MAX_ID_LENGTH} characters.`,
    )
  }
  const event: EventMessage = { type: 'event', watch: message.watch }
  const wake = message.wake
  if (wake !== undefined) {
    if (!Array.isArray(wake) || wake.length > MAX_WAKE || !wake.every(isCandidate)) {
      throw new ProtocolError(
        `Invalid event wake: ${shown(wake)}. wake is absent or an array of at most ${MAX_WAKE} candidate ids (strings of 1 to ${MAX_CANDIDATE_LENGTH} characters).`,
      )
    }
    event.wake = [...wake]
  }
  const granted = message.granted
  if (granted !== undefined) {
    const grant = (g: unknown): g is { candidate: string; token: number } =>
      typeof g === 'object' &&
      g !== null &&
      isCandidate((g as { candidate?: unknown }).candidate) &&
      Number.isSafeInteger((g as { token?: unknown }).token) &&
      (g as { token: number }).token > 0
    if (!Array.isArray(granted) || granted.length > MAX_WAKE || !granted.every(grant)) {
      throw new ProtocolError(
        `Invalid event granted: ${shown(granted)}. granted is absent or an array of at most ${MAX_WAKE} grants, each { candidate, token }: a candidate id (a string of 1 to ${MAX_CANDIDATE_LENGTH} characters) and a positive whole token.`,
      )
    }
    event.granted = granted.map((g) => ({ candidate: g.candidate, token: g.token }))
  }
  return event
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
      `Invalid request id: ${JSON.stringify(message.id)}. An id is a string of 1 to ${MAX_ID_LENGTH} characters.`,
    )
  }
  if (typeof message.op !== 'string' || !(OPS as readonly string[]).includes(message.op)) {
    throw new ProtocolError(
      `Invalid op: ${JSON.stringify(message.op)}. Known ops: ${OPS.join(', ')}.`,
    )
  }
  return { type: 'request', id: message.id, op: message.op as Op, args: message.args }
}

/** The remote message plus where it came from, as every rebuilt hub error says. */
const said = (w: ReceivedError, where: string) => `${w.message} (from ${where})`

/**
 * The hub's errors: every `ERR_CONCLAVE_*` error is its own, so each code in the catalogue
 * (CODES in src/errors.ts) is rebuilt as its class with its fields; anything else becomes a
 * RemoteHubError with the remote name and code (`ERR_CONCLAVE_REMOTE` without a string one).
 * The message is the remote one plus where it came from; the `code` is always the remote one,
 * so a final error stays final. No stacks: the hub's internals mean nothing to the worker.
 */
const hubErrors = wireErrors<string>({
  own: (error) => {
    const code = (error as { code?: unknown }).code
    return typeof code === 'string' && code.startsWith('ERR_CONCLAVE_')
  },
  stack: false,
  foreign: (w, where) =>
    new RemoteHubError(said(w, where), typeof w.code === 'string' ? w.code : undefined),
  finish(error, w, where) {
    // The remote words, not the local constructor's rebuilt ones (which could differ).
    error.message = said(w, where)
    if (w.name !== undefined) error.name = w.name
  },
})

/** An error as a plain object any IPC serialization carries: name, message, code and fields. */
export function toWire(error: unknown): WireError {
  return hubErrors.toWire(error)
}

/** Rebuilds an error the hub sent (see hubErrors); `where` names the hub in the message. */
export function fromWire(wire: unknown, where: string): Error {
  return hubErrors.fromWire(wire, where)
}
