/**
 * The process-wide default agent and the free functions over it, so application code can say
 * `runInPrimary(name, fn)` without passing an agent around. The first use creates it with
 * default options; call `startAgent(options)` first (in every process) to choose them.
 */
import { AgentStartedError } from '../errors.js'
import { type GatherEntry, ProcessAgent } from './agent.js'
import type { Handler } from './handlers.js'
import type { AgentOptions, CallOptions } from './options.js'

let current: ProcessAgent | undefined

/**
 * Starts this process's default agent (idempotent with no options). In the primary it routes
 * calls and elects; in a worker it connects and campaigns. Call it in the primary before forking.
 */
export function startAgent(options?: AgentOptions): ProcessAgent {
  if (current && options !== undefined) {
    throw new AgentStartedError()
  }
  current ??= new ProcessAgent(options)
  return current
}

/** The default agent (started with default options if needed). */
export function getAgent(): ProcessAgent {
  return startAgent()
}

/** Closes the default agent; the next use starts a fresh one. */
export async function stopAgent(): Promise<void> {
  const agent = current
  current = undefined
  await agent?.close()
}

/**
 * Registers `fn` under `name` in this process and returns a function that calls it in the
 * designated process (through the default agent).
 */
export function runInPrimary<A extends unknown[], R>(
  name: string,
  fn: (...args: A) => R,
  options?: { timeoutMs?: number },
): (...args: A) => Promise<Awaited<R>> {
  return getAgent().runInPrimary(name, fn, options)
}

/** Registers a handler for `gather`/`broadcast` (and `call`) in this process. */
export function handle(name: string, fn: Handler, options?: { replace?: boolean }): void {
  getAgent().register(name, fn, options)
}

/** Calls the handler `name` in the designated process (through the default agent). */
export function call<T = unknown>(
  name: string,
  args?: unknown[],
  options?: CallOptions,
): Promise<T> {
  return getAgent().call<T>(name, args, options)
}

/** Calls the handler `name` in every worker and collects each answer or error. */
export function gather<T = unknown>(
  name: string,
  args?: unknown[],
  options?: CallOptions,
): Promise<GatherEntry<T>[]> {
  return getAgent().gather<T>(name, args, options)
}

/** Calls the handler `name` in every worker, without waiting for answers. */
export function broadcast(name: string, args?: unknown[]): Promise<void> {
  return getAgent().broadcast(name, args)
}
