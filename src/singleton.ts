/**
 * Singletons: work that must run in one place (or in at most `tickets` places) at a time, as
 * thin layers over `Election.run`:
 * - `Singleton` (and `singletonService` / `singletonWorker`): a start/stop object that runs only
 *   while this process holds its resource, started again on each later term, with a state
 *   (`pending`, `starting`, `ready`, `stopping`, `stopped`) that can be read and observed;
 * - `every(election, intervalMs, fn)`: a leader-only interval job that never overlaps itself and
 *   never runs once its term has ended.
 */
import { EventEmitter } from 'node:events'
import type { Backend } from './backend.js'
import { sleep } from './clock.js'
import { Election } from './election.js'
import {
  ElectionClosedError,
  LeadershipLostError,
  OptionsError,
  type TermEndReason,
  WorkError,
} from './errors.js'
import { backoff, type ElectionOptions } from './options.js'
import type { Term } from './term.js'
import { milliseconds } from './validate.js'

/**
 * - `pending`: not running here; campaigning for the resource (or not started yet).
 * - `starting`: this process won a term; `start(term)` is running.
 * - `ready`: `start` finished and the term goes on.
 * - `stopping`: the term ended (or `start` threw); `stop(reason)` is running.
 * - `stopped`: closed for good.
 */
export type SingletonState = 'pending' | 'starting' | 'ready' | 'stopping' | 'stopped'

/** Why `stop` is called: how the term ended, or `failed` when `start` threw. */
export type SingletonStopReason = TermEndReason | 'failed'

/** How a singleton service starts in a won term and stops when it ends. */
export interface SingletonHandlers {
  /**
   * Called when this process wins a term. Use `term.signal` (aborts when the term ends) and
   * `term.token` (the fencing token). Throwing resigns the term (after `stop('failed')`).
   */
  start(term: Term): unknown
  /**
   * Called once after every `start`, whatever `start` did, when the term ends; never while
   * `start` still runs. The grant is released only after it returns (or after the election's
   * `drainMs`, whichever is first), so nobody else starts while this process is still stopping.
   */
  stop(reason: SingletonStopReason, term: Term): unknown
}

/** The events a Singleton emits, with their arguments. */
export interface SingletonEvents {
  state: [state: SingletonState, previous: SingletonState]
  /**
   * A `start` or `stop` that threw (a WorkError, `code` ERR_CONCLAVE_WORK, with the thrown value
   * as `cause`), or a `stop` that outlived `drainMs`.
   */
  error: [error: Error]
}

/**
 * A start/stop object that runs only while this process holds the election's resource. It owns
 * the election: `close()` closes it.
 *
 * ```ts
 * const mailer = singletonService(backend, 'mailer', {
 *   start: (term) => queue.consume({ signal: term.signal }),
 *   stop: () => queue.drain(),
 * }).start()
 * mailer.on('state', (state) => log.info({ state }))
 * ```
 */
export class Singleton extends EventEmitter<SingletonEvents> implements AsyncDisposable {
  readonly election: Election
  readonly #handlers: SingletonHandlers
  readonly #closeController = new AbortController()
  #state: SingletonState = 'pending'
  #started = false
  #closing: Promise<void> | undefined
  /** Which handler is running now, if any. */
  #busy: 'start' | 'stop' | undefined
  #failures = 0
  #warned = false

  constructor(election: Election, handlers: SingletonHandlers) {
    super()
    if (!(election instanceof Election)) {
      throw new OptionsError(
        'election',
        election,
        'A Singleton takes an Election (or use singletonService(backend, name, handlers)).',
      )
    }
    if (
      typeof handlers !== 'object' ||
      handlers === null ||
      typeof handlers.start !== 'function' ||
      typeof handlers.stop !== 'function'
    ) {
      throw new OptionsError(
        'handlers',
        handlers,
        'A singleton needs an object with start(term) and stop(reason) methods.',
      )
    }
    this.election = election
    this.#handlers = handlers
  }

  get state(): SingletonState {
    return this.#state
  }

  get resource(): string {
    return this.election.resource
  }

  /** Starts campaigning; `start(term)` is called on every term won. Idempotent. */
  start(): this {
    if (this.#closing) throw new ElectionClosedError(this.election.resource)
    if (this.#started) return this
    this.#started = true
    this.election.run((term) => this.#serve(term)).catch((error: unknown) => this.#report(error))
    return this
  }

  /**
   * Resolves once the state is `state` (at once if it is). Rejects with an ElectionClosedError
   * when the singleton stops while waiting for another state, or with the signal's reason.
   */
  whenState(state: SingletonState, options: { signal?: AbortSignal } = {}): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.#state === state) return resolve()
      if (this.#state === 'stopped') return reject(new ElectionClosedError(this.resource))
      const signal = options.signal
      if (signal?.aborted) return reject(signal.reason as Error)
      const done = (error?: Error) => {
        this.off('state', onState)
        signal?.removeEventListener('abort', onAbort)
        if (error === undefined) resolve()
        else reject(error)
      }
      const onState = (next: SingletonState) => {
        if (next === state) done()
        else if (next === 'stopped') done(new ElectionClosedError(this.resource))
      }
      const onAbort = () => done(signal!.reason as Error)
      this.on('state', onState)
      signal?.addEventListener('abort', onAbort, { once: true })
    })
  }

  /**
   * Ends the current term (its `stop` runs first, bounded by the election's `drainMs`), releases
   * the grant and stops campaigning. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      // The election first, so the term ends as 'closed'; then our own waits.
      const closing = this.election.close()
      this.#closeController.abort(new ElectionClosedError(this.resource))
      await closing
      if (this.#busy) {
        this.#report(
          new Error(
            `singleton "${this.resource}": ${this.#busy}() had not finished when the election closed (after drainMs ${this.election.options.drainMs} ms); its grant was released anyway`,
          ),
        )
      }
      this.#setState('stopped')
    })()
    return this.#closing
  }

  /** `await using`: closes the singleton. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  /** One term: start, wait for the end, stop; returns only when `stop` has finished. */
  async #serve(term: Term): Promise<void> {
    this.#setState('starting')
    let failed = false
    this.#busy = 'start'
    try {
      await this.#handlers.start(term)
    } catch (error) {
      failed = true
      this.#report(new WorkError(this.resource, term.token, error))
    }
    this.#busy = undefined
    if (!failed) {
      this.#failures = 0
      if (!term.signal.aborted) {
        this.#setState('ready')
        await new Promise((resolve) =>
          term.signal.addEventListener('abort', resolve, { once: true }),
        )
      }
    }
    const reason: SingletonStopReason = failed ? 'failed' : (term.endReason ?? 'expired')
    this.#setState('stopping')
    this.#busy = 'stop'
    const stopped = (async () => {
      try {
        await this.#handlers.stop(reason, term)
      } catch (error) {
        this.#report(new WorkError(this.resource, term.token, error))
      }
      this.#busy = undefined
    })()
    const { drainMs, retryMs, leaseMs, clock } = this.election.options
    const bound = new AbortController()
    const inTime = await Promise.race([
      stopped.then(() => true),
      sleep(clock, drainMs, bound.signal).then(
        () => false,
        () => true,
      ),
    ])
    bound.abort()
    if (!inTime && !this.#closing) {
      // The election releases after drainMs anyway (on a loss or close); we resign below.
      this.#report(
        new Error(
          `singleton "${this.resource}": stop() has not finished after drainMs (${drainMs} ms); the grant is released anyway, and this process campaigns again only once stop() returns`,
        ),
      )
    }
    if (failed) {
      // Step down so another candidate gets its chance, and back off before trying again. A term
      // already ending (closed, lost) is not awaited here: that end waits for this very work.
      if (!term.signal.aborted) await term.resign()
      const wait = backoff(this.#failures++, retryMs, leaseMs)
      await sleep(clock, wait, this.#closeController.signal).catch(() => {})
    }
    // Never start again (nor campaign) while a previous stop() still runs.
    await stopped
    if (!this.#closing) this.#setState('pending')
  }

  #setState(next: SingletonState): void {
    const previous = this.#state
    if (previous === next || previous === 'stopped') return
    this.#state = next
    try {
      this.emit('state', next, previous)
    } catch (error) {
      this.#report(error)
    }
  }

  #report(error: unknown): void {
    const err = error instanceof Error ? error : new Error(String(error))
    if (this.listenerCount('error') > 0) {
      try {
        this.emit('error', err)
      } catch {
        // A throwing error listener has nowhere left to report to.
      }
    } else if (!this.#warned) {
      this.#warned = true
      process.emitWarning(
        `conclave: singleton "${this.resource}" hit an error and has no 'error' listener: ${err.message}`,
        'ConclaveWarning',
      )
    }
  }
}

function serviceName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0) {
    throw new OptionsError('name', name, 'A singleton name is a non-empty resource name segment.')
  }
  return name
}

/** A singleton service on the resource `service/<name>`. Call `.start()` to campaign. */
export function singletonService(
  backend: Backend,
  name: string,
  handlers: SingletonHandlers,
  options: ElectionOptions = {},
): Singleton {
  return new Singleton(new Election(backend, `service/${serviceName(name)}`, options), handlers)
}

/** A singleton worker on the resource `worker/<name>`. Call `.start()` to campaign. */
export function singletonWorker(
  backend: Backend,
  name: string,
  handlers: SingletonHandlers,
  options: ElectionOptions = {},
): Singleton {
  return new Singleton(new Election(backend, `worker/${serviceName(name)}`, options), handlers)
}

/** What each run of an `every()` job gets. */
export interface EveryContext {
  /** The fencing token of the term this run belongs to. */
  token: number
  /** Aborts when the term ends: stop the run's side effects. */
  signal: AbortSignal
  term: Term
  /**
   * When every() started this run, on the election's clock (`performance.now()` by default),
   * right after it found the term still within its deadline. A process paused (or stalled)
   * between that check and the run's own first line reads its clock later than this.
   */
  startedAt: number
}

/** Options of `every()`. */
export interface EveryOptions {
  /** Stops the job (resigning the current term, after the running `fn` finished). */
  signal?: AbortSignal
  /** Run at once when a term starts (default true), or first after `intervalMs`. */
  immediate?: boolean
  /**
   * Where a throwing `fn` is reported, as a WorkError (`code` ERR_CONCLAVE_WORK, the thrown value
   * as `cause`). Default: the election's `error` event (or a warning), where metrics count it as
   * the work's error and health checks do not take it for an unreachable backend.
   */
  onError?: (error: Error) => void
}

/**
 * Runs `fn` every `intervalMs` on the holder(s) of `election`'s resource: on N holders with
 * `tickets: N`. Runs never overlap (a run that takes longer than the interval delays the next
 * one); a run never starts once the term has ended (checked against the clock right before each
 * run, so a stalled process does not run late either). Runs `election.run()` until `signal`
 * aborts or the election closes, then resolves.
 */
export async function every(
  election: Election,
  intervalMs: number,
  fn: (context: EveryContext) => unknown,
  options: EveryOptions = {},
): Promise<void> {
  if (!(election instanceof Election))
    throw new OptionsError('election', election, 'every() takes an Election first.')
  milliseconds('intervalMs', intervalMs, 1)
  if (typeof fn !== 'function')
    throw new OptionsError('fn', fn, 'every() takes a function to run on the holder.')
  const clock = election.options.clock
  const immediate = options.immediate ?? true
  let warned = false
  const report = (err: WorkError) => {
    if (options.onError) options.onError(err)
    else if (election.listenerCount('error') > 0) election.emit('error', err)
    else if (!warned) {
      warned = true
      process.emitWarning(
        `conclave: every() on "${election.resource}" hit an error and has no 'error' listener: ${err.message}`,
        'ConclaveWarning',
      )
    }
  }
  await election.run(
    async (term) => {
      let next = clock.now() + (immediate ? 0 : intervalMs)
      for (;;) {
        const wait = next - clock.now()
        if (wait > 0) {
          try {
            await sleep(clock, wait, term.signal)
          } catch {
            return
          }
        }
        if (!term.active) return
        const started = clock.now()
        try {
          await fn({ token: term.token, signal: term.signal, term, startedAt: started })
        } catch (error) {
          // Giving up because the term ended is the expected way out, not a failure.
          if (!(term.signal.aborted && isAbortLike(error, term.signal)))
            report(new WorkError(election.resource, term.token, error))
        }
        next = Math.max(started + intervalMs, clock.now())
      }
    },
    { signal: options.signal },
  )
}

function isAbortLike(error: unknown, signal: AbortSignal): boolean {
  return (
    error === signal.reason ||
    error instanceof LeadershipLostError ||
    (error instanceof Error && error.name === 'AbortError')
  )
}
