/**
 * The hub protocol: how a process asks a backend in another process to act, over any
 * message transport (node:cluster IPC today; a unix socket for the `local` backend later).
 * Every message carries `[namespace]: 1` so conclave's traffic shares a channel with the
 * application's own messages; a message without it is not ours and is ignored.
 *
 *   request  { [ns]: 1, type: 'request', id, op, args }
 *   response { [ns]: 1, type: 'response', id, ok: true, value }
 *            { [ns]: 1, type: 'response', id, ok: false, error: { name, message, code } }
 *   event    { [ns]: 1, type: 'event', watch }          (the holders of a watched resource changed)
 */
import { ConclaveError, ProtocolError } from '../../errors.js'

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
export interface WireError {
  name: string
  message: string
  code?: string
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

export function toWire(error: unknown): WireError {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code
    return {
      name: error.name,
      message: error.message,
      ...(typeof code === 'string' ? { code } : {}),
    }
  }
  return { name: 'Error', message: String(error) }
}

/** Rebuilds a remote error with its name, message and code. */
export function fromWire(wire: unknown, where: string): Error {
  const w = (typeof wire === 'object' && wire !== null ? wire : {}) as Partial<WireError>
  const message = `${typeof w.message === 'string' ? w.message : 'unknown error'} (from ${where})`
  const error = new ConclaveError(
    typeof w.code === 'string' ? w.code : 'ERR_CONCLAVE_REMOTE',
    message,
  )
  error.name = typeof w.name === 'string' ? w.name : 'Error'
  return error
}
