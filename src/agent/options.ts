/**
 * The agent's options: their types, defaults and checks, in one place so every role (and the
 * free functions) refuses a bad value the same way, before anything is sent.
 */
import type { Backend } from '../backend.js'
import { checkOptions, validateLeaseMs, validateResource } from '../validate.js'
import { OptionsError } from '../errors.js'
import { AGENT_NAMESPACE, isName, MAX_NAME_LENGTH } from './protocol.js'

/** How a ProcessAgent is started (see docs/agent.md for each option). */
export interface AgentOptions {
  /** Primary: who campaigns to be the designated process. Default `'worker'`. Workers learn it. */
  designated?: 'worker' | 'primary'
  /** Default timeout of `call`/`runInPrimary` calls, ms. Default 10000. */
  timeoutMs?: number
  /** Default timeout of `gather`, per worker, ms. Default 5000. */
  gatherTimeoutMs?: number
  /** Lease of the designated process's grant (how long a hung one keeps it), ms. Default 10000. */
  leaseMs?: number
  /** The reserved resource the designated process holds. Default `conclave/agent/designated`. */
  resource?: string
  /** The message key marking the agent's IPC traffic. Default `conclave-agent`. */
  namespace?: string
  /** Told about malformed messages, failed sends, handler errors of broadcasts, election errors. */
  onError?: (error: Error) => void
  /** The backend to elect the designated process on. Default `clusterBackend()`. */
  backend?: Backend
}

/** Per-call options of `call`, `gather` and the helpers built on them. */
export interface CallOptions {
  /** Give up after this long, ms (default: the agent's timeoutMs or gatherTimeoutMs). */
  timeoutMs?: number
  /** Give up when it aborts; the handler's own signal aborts in the remote process too. */
  signal?: AbortSignal
}

/** AgentOptions checked, with every default filled in (the backend stays optional: see below). */
export interface AgentSettings {
  designated: 'worker' | 'primary'
  timeoutMs: number
  gatherTimeoutMs: number
  leaseMs: number
  resource: string
  namespace: string
  onError: ((error: Error) => void) | undefined
  /** Undefined: the agent makes (and so closes) its own cluster backend. */
  backend: Backend | undefined
}

/** The reserved resource whose holder is the designated process, unless `resource` says another. */
export const DESIGNATED_RESOURCE = 'conclave/agent/designated'

const KNOWN_OPTIONS = new Set([
  'designated',
  'timeoutMs',
  'gatherTimeoutMs',
  'leaseMs',
  'resource',
  'namespace',
  'onError',
  'backend',
])

/** Checks AgentOptions (unknown keys included: a typo must not silently use a default). */
export function resolveOptions(options: AgentOptions): AgentSettings {
  if (options === undefined)
    throw new OptionsError('options', options, 'Agent options must be an object.')
  checkOptions(options, [...KNOWN_OPTIONS], 'agent', 'Agent options must be an object.')
  if (
    options.designated !== undefined &&
    options.designated !== 'worker' &&
    options.designated !== 'primary'
  ) {
    throw new OptionsError('designated', options.designated, "designated is 'worker' or 'primary'.")
  }
  if (options.onError !== undefined && typeof options.onError !== 'function') {
    throw new OptionsError('onError', options.onError, 'onError must be a function.')
  }
  if (
    options.namespace !== undefined &&
    (typeof options.namespace !== 'string' ||
      options.namespace.length === 0 ||
      options.namespace === 'conclave')
  ) {
    throw new OptionsError(
      'namespace',
      options.namespace,
      'namespace is a non-empty string other than "conclave" (the cluster hub uses that key).',
    )
  }
  const timeoutMs =
    options.timeoutMs === undefined ? 10_000 : checkTimeout('timeoutMs', options.timeoutMs)
  const gatherTimeoutMs =
    options.gatherTimeoutMs === undefined
      ? 5_000
      : checkTimeout('gatherTimeoutMs', options.gatherTimeoutMs)
  const leaseMs = options.leaseMs === undefined ? 10_000 : validateLeaseMs(options.leaseMs)
  return {
    designated: options.designated ?? 'worker',
    timeoutMs,
    gatherTimeoutMs,
    leaseMs,
    resource: validateResource(options.resource ?? DESIGNATED_RESOURCE),
    namespace: options.namespace ?? AGENT_NAMESPACE,
    onError: options.onError,
    backend: options.backend,
  }
}

/** A timer's delay: setTimeout clamps anything above 2^31-1 ms to 1 ms, so refuse it. */
export function checkTimeout(field: string, value: unknown): number {
  if (!Number.isInteger(value) || (value as number) < 1 || (value as number) > 2 ** 31 - 1) {
    throw new OptionsError(
      field,
      value,
      `${field} must be an integer number of milliseconds from 1 to 2147483647.`,
    )
  }
  return value as number
}

/** A handler name, checked where it is given (the primary would refuse it later, less clearly). */
export function checkName(name: unknown): string {
  if (!isName(name)) {
    throw new OptionsError(
      'name',
      name,
      `A handler name is a string of 1 to ${MAX_NAME_LENGTH} characters, the same in every process.`,
    )
  }
  return name
}

/** CallOptions checked, `fallbackMs` filling a missing timeout (every call has one). */
export function checkCallOptions(
  options: CallOptions,
  fallbackMs: number,
): { timeoutMs: number; signal?: AbortSignal } {
  if (typeof options !== 'object' || options === null) {
    throw new OptionsError('options', options, 'Call options must be an object.')
  }
  const timeoutMs =
    options.timeoutMs === undefined ? fallbackMs : checkTimeout('timeoutMs', options.timeoutMs)
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) {
    throw new OptionsError('signal', options.signal, 'signal must be an AbortSignal.')
  }
  return options.signal ? { timeoutMs, signal: options.signal } : { timeoutMs }
}

/** A call's argument list: an array, so it spreads into the handler the same in every process. */
export function checkArgs(args: unknown): unknown[] {
  if (!Array.isArray(args)) throw new OptionsError('args', args, 'args is an array of arguments.')
  return args
}
