/**
 * The agent's messages on the cluster IPC channel (or the `local` backend's socket), in conclave's shared envelope
 * (src/ipc/envelope.ts): each carries `[namespace]: 1` (default key `conclave-agent`), so it
 * shares the channel with the cluster backend's hub (`conclave`) and the application; anything
 * without the key is someone else's and is ignored. Errors cross as the envelope's WireError.
 *
 * worker → primary
 *   hello     { candidate? }                       ask for the welcome (serialization, mode)
 *   call      { id, name, args, timeoutMs }        run `name` in the designated process
 *   gather    { id, name, args, timeoutMs }        run `name` in every worker, one entry each
 *   broadcast { name, args }                       run `name` in every worker, no answer
 *   cancel    { id }                               the caller gave up on call/gather `id`
 *   reply     { id, ok, value | error }            answer to a `run` or `invoke` below
 * primary → worker
 *   welcome   { serialization, designated, workerId }
 *   run       { id, name, args, timeoutMs, from }  you are the designated process: run it
 *   invoke    { id | null, name, args, timeoutMs, from }  run your handler (null: no answer)
 *   cancel    { id }                               stop run/invoke `id` (its signal aborts)
 *   result    { id, ok, value | error, by }        answer to `call`
 *   gathered  { id, entries }                      answer to `gather`
 */
import { AgentError, type ErrorCode, ProtocolError, RemoteError } from '../errors.js'
import { isId, MAX_ID_LENGTH, type WireError, wireErrors } from '../ipc/envelope.js'
import type { Serialization } from './serialize.js'

/** The agent's message key; not the hub's `conclave`, so both share the channel. */
export const AGENT_NAMESPACE = 'conclave-agent'
/** The longest handler name: a peer's name is kept while its call runs. */
export const MAX_NAME_LENGTH = 200
const MAX_TIMEOUT_MS = 2 ** 31 - 1
/**
 * The code of a holder's refusal (NotDesignatedError) of a `run` it received before its term
 * started or after it ended; the primary routes the call again (it never reaches a caller).
 */
export const NOT_DESIGNATED = 'ERR_CONCLAVE_AGENT_NOT_DESIGNATED' satisfies ErrorCode

/** A process of the cluster, as messages name it. */
export interface Peer {
  /** `cluster.worker.id`; 0 for the primary. */
  workerId: number
  pid: number
}

/** A call's answer in wire form, with the process that gave it (errors are rebuilt from it). */
export type Outcome =
  { ok: true; value: unknown; by: Peer } | { ok: false; error: WireError; by: Peer }

/** One worker's answer in a `gathered` message. */
export interface WireEntry {
  workerId: number
  pid: number
  ok: boolean
  value?: unknown
  error?: WireError
}

/** What a worker sends the primary. */
export type FromWorker =
  | { type: 'hello'; candidate?: string }
  | { type: 'call' | 'gather'; id: string; name: string; args: unknown[]; timeoutMs: number }
  | { type: 'broadcast'; name: string; args: unknown[] }
  | { type: 'cancel'; id: string }
  | { type: 'reply'; id: string; ok: true; value: unknown }
  | { type: 'reply'; id: string; ok: false; error: WireError }

/** What the primary sends a worker. */
export type FromPrimary =
  | {
      type: 'welcome'
      serialization: Serialization
      designated: 'worker' | 'primary'
      /** The worker's id in the router's pool (local: it changes with the hub). */
      workerId?: number
    }
  | {
      type: 'run' | 'invoke'
      id: string | null
      name: string
      args: unknown[]
      timeoutMs: number
      from: Peer
    }
  | { type: 'cancel'; id: string }
  | ({ type: 'result'; id: string } & Outcome)
  | { type: 'gathered'; id: string; entries: WireEntry[] }

/** Unique across the cluster's processes (pid and random), so ids never collide in the primary. */
export function idPrefix(): string {
  return `${process.pid.toString(36)}-${Math.random().toString(36).slice(2, 8)}`
}

/** A handler name as messages carry it (bounded: the primary keeps it while the call runs). */
export function isName(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0 && value.length <= MAX_NAME_LENGTH
}

function isTimeout(value: unknown): value is number {
  return Number.isInteger(value) && (value as number) >= 1 && (value as number) <= MAX_TIMEOUT_MS
}

function show(value: unknown): string {
  try {
    const text = JSON.stringify(value)
    if (text === undefined) return String(typeof value)
    return text.length > 60 ? `${text.slice(0, 57)}...` : text
  } catch {
    return 'a value JSON cannot show'
  }
}

const bad = (what: string, value: unknown, rule: string) =>
  new ProtocolError(`Invalid agent message ${what}: ${show(value)}. ${rule}`)

/** Checks a worker's message in the primary; throws a ProtocolError naming the broken field. */
export function parseFromWorker(m: Record<string, unknown>): FromWorker {
  const type = m.type
  switch (type) {
    case 'hello':
      // The candidate id of its designated election: how the local hub finds the holder.
      return isId(m.candidate) ? { type, candidate: m.candidate } : { type }
    case 'call':
    case 'gather':
      if (!isId(m.id))
        throw bad('id', m.id, `An id is a string of 1 to ${MAX_ID_LENGTH} characters.`)
      if (!isName(m.name))
        throw bad('name', m.name, `A name is a string of 1 to ${MAX_NAME_LENGTH} characters.`)
      if (!Array.isArray(m.args)) throw bad('args', m.args, 'args is an array.')
      if (!isTimeout(m.timeoutMs))
        throw bad('timeoutMs', m.timeoutMs, 'timeoutMs is an integer from 1 to 2147483647.')
      return { type, id: m.id, name: m.name, args: m.args as unknown[], timeoutMs: m.timeoutMs }
    case 'broadcast':
      if (!isName(m.name))
        throw bad('name', m.name, `A name is a string of 1 to ${MAX_NAME_LENGTH} characters.`)
      if (!Array.isArray(m.args)) throw bad('args', m.args, 'args is an array.')
      return { type, name: m.name, args: m.args as unknown[] }
    case 'cancel':
      if (!isId(m.id))
        throw bad('id', m.id, `An id is a string of 1 to ${MAX_ID_LENGTH} characters.`)
      return { type, id: m.id }
    case 'reply':
      if (!isId(m.id))
        throw bad('id', m.id, `An id is a string of 1 to ${MAX_ID_LENGTH} characters.`)
      if (m.ok === true) return { type, id: m.id, ok: true, value: m.value }
      if (m.ok === false) {
        const e = m.error as Record<string, unknown> | null | undefined
        if (
          typeof e !== 'object' ||
          e === null ||
          typeof e.name !== 'string' ||
          typeof e.message !== 'string'
        )
          throw bad(
            'error',
            m.error,
            'A failed reply carries an error object with a name and a message.',
          )
        return { type, id: m.id, ok: false, error: e as unknown as WireError }
      }
      throw bad('ok', m.ok, 'A reply has ok: true or ok: false.')
    default:
      throw bad(
        'type',
        type,
        'Known types from a worker: hello, call, gather, broadcast, cancel, reply.',
      )
  }
}

/**
 * The agent's errors on the wire: its own classes (AgentError and kin, never a handler's
 * error) are rebuilt as themselves from the catalogue (CODES) with the remote message and
 * stack; anything a handler threw arrives as a RemoteError with the remote name, message, code
 * and stack, and where it came from.
 */
const agentErrors = wireErrors<Peer>({
  own: (error) => error instanceof AgentError,
  stack: true,
  foreign: (w, remote) =>
    new RemoteError(
      {
        name: w.name ?? 'Error',
        message: w.message,
        ...(w.code !== undefined ? { code: w.code } : {}),
        ...(w.stack !== undefined ? { stack: w.stack } : {}),
      },
      remote,
    ),
})

/** An error as the agent sends it (see agentErrors). */
export function errorToWire(error: unknown): WireError {
  return agentErrors.toWire(error)
}

/** Rebuilds an error that crossed IPC: the agent's own as their classes, others as RemoteError. */
export function errorFromWire(wire: unknown, remote: Peer): Error {
  return agentErrors.fromWire(wire, remote)
}
