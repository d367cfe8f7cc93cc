/**
 * conclave's envelope on an IPC channel it shares with the application: one wire format for
 * the cluster backend's hub protocol (`conclave`) and the process agent (`conclave-agent`).
 *
 * Every message carries `[namespace]: 1`; a message without it belongs to someone else and is
 * ignored. Errors cross as a WireError: name, message, code (and, where the receiver shows it,
 * the stack); an error of one of the sender's own classes is marked `own` and carries that
 * class's fields, so the receiver rebuilds the same class by its code from the one catalogue,
 * CODES in src/errors.ts (`wireErrors`). Both ends run the same package version, so the format
 * only has to agree with itself.
 */
import { codeEntry, type WireForm } from '../errors.js'

/** The longest id either protocol accepts: bounds what a peer can make the other side keep. */
export const MAX_ID_LENGTH = 128

/** Wraps `body` under the namespace key, so receivers tell conclave's messages from others. */
export function envelope<T extends object>(ns: string, body: T): T & Record<string, 1> {
  return { [ns]: 1, ...body }
}

/** True for a message in namespace `ns`; anything else on the channel is not ours to read. */
export function isOurs(message: unknown, ns: string): message is Record<string, unknown> {
  return (
    typeof message === 'object' &&
    message !== null &&
    (message as Record<string, unknown>)[ns] === 1
  )
}

/** A request, call or watch id: a bounded string, since the peer chooses it. */
export function isId(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0 && value.length <= MAX_ID_LENGTH
}

/** An error as plain data that both IPC serializations (JSON, structured clone) carry. */
export interface WireError {
  name: string
  message: string
  /** A string code (conclave's `ERR_CONCLAVE_*`), or a finite number (an errno, a user's). */
  code?: string | number
  /** Only when the protocol sends stacks (the agent: a handler's stack is the useful part). */
  stack?: string
  /** One of the sender's own classes: the receiver may rebuild it by `code`. */
  own?: true
  /** The own class's fields (plain JSON values only), for its rebuild. */
  fields?: Record<string, unknown>
}

/** A wire error read defensively (the peer may send anything): each part checked. */
export interface ReceivedError extends WireForm {
  /** The remote `name`, if it sent a string. */
  name: string | undefined
  /** The remote message, `unknown error` when it sent none. */
  message: string
  code: string | number | undefined
  stack: string | undefined
  own: boolean
  /** The own class's fields; empty when none arrived. */
  fields: Record<string, unknown>
}

/**
 * One protocol's rules for its errors on the wire (the hub's and the agent's differ in which
 * errors are their own, whether stacks cross, and what foreign errors become). The classes, and
 * the fields each carries, come from the catalogue (CODES) for both.
 */
export interface WireErrorRules<Where> {
  /** Errors rebuilt as their class on the other side; all others arrive as foreign errors. */
  own(error: Error): boolean
  /** Whether stacks cross (and a class rebuilt by code takes the remote one). */
  stack: boolean
  /** Everything else: a foreign error, or an own code that is not in CODES. */
  foreign(wire: ReceivedError, where: Where): Error
  /** Applied to every rebuilt error (the hub's errors say where they came from). */
  finish?(error: Error, wire: ReceivedError, where: Where): void
}

/** An error codec: `toWire` on the sending side, `fromWire` (with where it came from) here. */
export interface WireErrors<Where> {
  toWire(error: unknown): WireError
  fromWire(wire: unknown, where: Where): Error
}

/**
 * Builds a protocol's error codec from its rules. An own error is rebuilt by its code's
 * `fromWire` in CODES, then given the remote message (and stack, where stacks cross), so it
 * arrives as the same class with the same code, fields and words.
 */
export function wireErrors<Where>(rules: WireErrorRules<Where>): WireErrors<Where> {
  return {
    toWire: (error) => errorToWire(error, rules),
    fromWire(wire, where) {
      const received = readWireError(wire)
      const entry = received.own ? codeEntry(received.code) : undefined
      let error: Error
      if (entry) {
        error = entry.fromWire(received)
        error.message = received.message
        if (rules.stack && received.stack !== undefined) error.stack = received.stack
      } else {
        error = rules.foreign(received, where)
      }
      rules.finish?.(error, received, where)
      return error
    },
  }
}

function errorToWire(
  error: unknown,
  rules: Pick<WireErrorRules<never>, 'own' | 'stack'>,
): WireError {
  if (!(error instanceof Error)) {
    return { name: 'Error', message: typeof error === 'string' ? error : safeString(error) }
  }
  const code = (error as { code?: unknown }).code
  const wire: WireError = {
    name: typeof error.name === 'string' ? error.name : 'Error',
    message: typeof error.message === 'string' ? error.message : '',
  }
  if (typeof code === 'string' || (typeof code === 'number' && Number.isFinite(code)))
    wire.code = code
  if (rules.stack && typeof error.stack === 'string') wire.stack = error.stack
  if (rules.own(error)) {
    wire.own = true
    const own = error as unknown as Record<string, unknown>
    const fields: Record<string, unknown> = {}
    let any = false
    for (const key of codeEntry(code)?.fields ?? []) {
      const value = plainJson(own[key])
      if (value !== undefined) {
        fields[key] = value
        any = true
      }
    }
    if (any) wire.fields = fields
  }
  return wire
}

function readWireError(wire: unknown): ReceivedError {
  const w = (typeof wire === 'object' && wire !== null ? wire : {}) as Record<string, unknown>
  const fields = w.fields
  return {
    name: typeof w.name === 'string' ? w.name : undefined,
    message: typeof w.message === 'string' ? w.message : 'unknown error',
    code: typeof w.code === 'string' || typeof w.code === 'number' ? w.code : undefined,
    stack: typeof w.stack === 'string' ? w.stack : undefined,
    own: w.own === true,
    fields:
      typeof fields === 'object' && fields !== null && !Array.isArray(fields)
        ? (fields as Record<string, unknown>)
        : {},
  }
}

/** `value` if JSON keeps its meaning (so both serializations carry it), else undefined. */
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

function safeString(value: unknown): string {
  try {
    return String(value)
  } catch {
    return 'a value that cannot be shown'
  }
}
