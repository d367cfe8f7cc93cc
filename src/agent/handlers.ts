/**
 * Running a call in this process, for whichever side asked: the registry of handlers, the call
 * context a handler reads (`currentCall()`), the checks a designated call passes (this process
 * holds the term, the result can cross IPC), and cancellation of what runs here. Both roles
 * (worker link, primary router) and the agent's own local calls run handlers through this.
 */
import { AsyncLocalStorage } from 'node:async_hooks'
import {
  AgentTimeoutError,
  DesignatedLostError,
  NoHandlerError,
  NotDesignatedError,
  OptionsError,
} from '../errors.js'
import type { Term } from '../term.js'
import { errorFromWire, errorToWire, type Outcome, type Peer } from './protocol.js'
import { assertCarriable, copyValue, type Serialization } from './serialize.js'

/** A function registered under a name; it may return a promise. */
export type Handler = (...args: never[]) => unknown

/** What a handler can learn about the call it is serving (`currentCall()`). */
export interface CallContext {
  /** Aborts when the caller gives up, the call times out, or (designated calls) the term ends. */
  signal: AbortSignal
  /** The calling process (workerId 0 is the primary). */
  from: Peer
  /** `designated` for runInPrimary/call, `worker` for gather/broadcast. */
  kind: 'designated' | 'worker'
  /** Designated calls: the fencing token of the designated process's term. */
  token?: number
}

/** The built-in handler `clusterHealth` gathers; every worker answers "alive" until replaced. */
export const HEALTH_HANDLER = 'conclave/health'

const callContext = new AsyncLocalStorage<CallContext>()

/** The call being served, inside a handler (also after awaits); undefined elsewhere. */
export function currentCall(): CallContext | undefined {
  return callContext.getStore()
}

/** A handler running here for another process; `cancel` aborts its signal. */
interface Running {
  cancel(): void
}

/**
 * This process's handlers and the calls running in it. It also holds the designated term
 * while this process has it: a designated call runs only under an active term, and the term's
 * end aborts every designated call still running.
 */
export class Handlers {
  readonly #self: Peer
  readonly #serialization: () => Serialization
  readonly #report: (error: unknown) => void
  readonly #fns = new Map<string, Handler>([[HEALTH_HANDLER, () => ({ ok: true })]])
  /** By the id the caller will cancel with (a broadcast has none: a local key). */
  readonly #running = new Map<string, Running>()
  readonly #designatedCalls = new Set<AbortController>()
  #term: Term | undefined
  #seq = 0

  /** `serialization` is read per call: a worker learns it only once welcomed. */
  constructor(self: Peer, serialization: () => Serialization, report: (error: unknown) => void) {
    this.#self = self
    this.#serialization = serialization
    this.#report = report
  }

  /** True while this process holds the designated term (reads the clock). */
  get isDesignated(): boolean {
    return this.#term?.active ?? false
  }

  /** Adds `name → fn`; a different function under a taken name is refused unless `replace`. */
  register(name: string, fn: Handler, options: { replace?: boolean }): void {
    if (this.#fns.has(name) && this.#fns.get(name) !== fn && !options.replace) {
      throw new OptionsError(
        'name',
        name,
        'A handler with this name is already registered in this process.',
        'Use another name, or pass { replace: true }.',
      )
    }
    this.#fns.set(name, fn)
  }

  /** Whether `name` has a handler here. */
  has(name: string): boolean {
    return this.#fns.has(name)
  }

  /** Removes `name`'s handler; false when there was none. */
  unregister(name: string): boolean {
    return this.#fns.delete(name)
  }

  /** This process won the designated term: designated calls may run until it ends. */
  termStarted(term: Term): void {
    this.#term = term
  }

  /** The term ended: the designated calls still running are aborted with its reason. */
  termEnded(term: Term): void {
    if (this.#term === term) this.#term = undefined
    for (const call of this.#designatedCalls) call.abort(term.signal.reason)
    this.#designatedCalls.clear()
  }

  /**
   * Runs a handler here; the outcome is in wire form, ready to send. Never rejects.
   * `localCaller`: the caller is this process, so it gets a copy of the result, as if the
   * result had crossed IPC.
   */
  runLocal(
    kind: 'designated' | 'worker',
    name: string,
    args: unknown[],
    timeoutMs: number,
    from: Peer,
    localCaller = false,
  ): { outcome: Promise<Outcome>; cancel(): void } {
    const controller = new AbortController()
    const by = this.#self
    const cancel = () =>
      controller.abort(new AgentTimeoutError(`The call of "${name}" was cancelled by its caller.`))
    const outcome = (async (): Promise<Outcome> => {
      const fn = this.#fns.get(name)
      if (!fn) {
        return {
          ok: false,
          error: errorToWire(
            new NoHandlerError(`No handler "${name}" is registered in ${describePeer(by)}.`),
          ),
          by,
        }
      }
      const term = kind === 'designated' ? this.#term : undefined
      if (kind === 'designated' && !term?.active) {
        return {
          ok: false,
          error: errorToWire(
            new NotDesignatedError(`${describePeer(by)} is not the designated process.`),
          ),
          by,
        }
      }
      const timer = setTimeout(
        () =>
          controller.abort(
            new AgentTimeoutError(`The call of "${name}" took longer than ${timeoutMs} ms.`),
          ),
        timeoutMs,
      )
      timer.unref()
      // The term's end aborts designated calls (see termEnded).
      if (term) this.#designatedCalls.add(controller)
      const signal = controller.signal
      const context: CallContext = { signal, from, kind, ...(term ? { token: term.token } : {}) }
      try {
        const value: unknown = await callContext.run(context, () =>
          (fn as (...a: unknown[]) => unknown)(...args),
        )
        if (term && !term.active) {
          return {
            ok: false,
            error: errorToWire(
              new DesignatedLostError(
                `${describePeer(by)} stopped being the designated process while "${name}" ran.`,
              ),
            ),
            by,
          }
        }
        // Past its deadline or cancelled: the caller has given up, whatever the handler returned.
        if (controller.signal.aborted) throw controller.signal.reason
        const mode = this.#serialization()
        assertCarriable(value, mode, `the result of "${name}"`)
        return { ok: true, value: localCaller ? copyValue(value, mode) : value, by }
      } catch (error) {
        return { ok: false, error: errorToWire(error), by }
      } finally {
        clearTimeout(timer)
        this.#designatedCalls.delete(controller)
      }
    })()
    return { outcome, cancel }
  }

  /**
   * Serves a call another process made (a worker's run/invoke from the primary; the primary's
   * own designated calls for workers): runs it, cancellable by `id`, and hands the outcome to
   * `answer`. `id` null is a broadcast: nobody waits, so a failure is reported here instead.
   */
  serve(
    kind: 'designated' | 'worker',
    id: string | null,
    name: string,
    args: unknown[],
    timeoutMs: number,
    from: Peer,
    answer: (outcome: Outcome) => void,
  ): void {
    const local = this.runLocal(kind, name, args, timeoutMs, from)
    const key = id ?? `b${++this.#seq}`
    this.#running.set(key, { cancel: () => local.cancel() })
    void local.outcome.then((outcome) => {
      this.#running.delete(key)
      if (id === null) {
        if (!outcome.ok) this.#report(errorFromWire(outcome.error, outcome.by))
        return
      }
      try {
        answer(outcome)
      } catch (error) {
        // The channel closed under us: nobody is left to answer.
        this.#report(error)
      }
    })
  }

  /** The caller of `id` gave up: abort its handler's signal (unknown ids are already done). */
  cancel(id: string): void {
    this.#running.get(id)?.cancel()
  }

  /** The agent closes: every handler running here for someone else is told to stop. */
  cancelAll(): void {
    for (const running of this.#running.values()) running.cancel()
  }
}

/** "the primary (pid …)" or "worker N (pid …)", for messages that say where a call failed. */
export function describePeer(peer: Peer): string {
  return peer.workerId === 0
    ? `the primary (pid ${peer.pid})`
    : `worker ${peer.workerId} (pid ${peer.pid})`
}

/** Races an outcome against a timeout and an abort signal; `onGiveUp` stops the work. */
export function raceAbort(
  outcome: Promise<Outcome>,
  signal: AbortSignal | undefined,
  timeoutMs: number,
  onGiveUp: () => void,
  what: string,
  timeoutMessage?: string,
): Promise<Outcome> {
  return new Promise<Outcome>((resolve, reject) => {
    let settled = false
    const finish = () => {
      settled = true
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
    }
    const onAbort = () => {
      if (settled) return
      finish()
      onGiveUp()
      reject(signal!.reason as Error)
    }
    const timer = setTimeout(() => {
      if (settled) return
      finish()
      onGiveUp()
      reject(
        new AgentTimeoutError(
          timeoutMessage ?? `No answer to the call of "${what}" within ${timeoutMs} ms.`,
        ),
      )
    }, timeoutMs)
    timer.unref()
    signal?.addEventListener('abort', onAbort, { once: true })
    void outcome.then((o) => {
      if (settled) return
      finish()
      resolve(o)
    })
  })
}
