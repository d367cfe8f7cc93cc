/**
 * Process lifecycle: one call makes SIGTERM/SIGINT close every registered election (or
 * singleton, or anything with `close()`): abort, drain, release, so another process takes over
 * in about one round trip instead of one lease. Then the process exits, with a bound on how long
 * closing may take.
 */
import { constants } from 'node:os'
import { OptionsError } from './errors.js'
import { checkOptions, optionalMilliseconds } from './validate.js'

/** An Election, a Singleton, a backend: anything closed on shutdown. */
export interface Closable {
  /** Closes it; may return a promise the shutdown awaits. */
  close(): unknown
}

/** Options of `closeOnSignals()`. */
export interface ShutdownOptions {
  /** Signals that start the shutdown. Default SIGTERM and SIGINT. */
  signals?: NodeJS.Signals[]
  /**
   * How long closing may take (ms) before the process exits anyway. Default 10000. Keep it above
   * the elections' `drainMs` plus a round trip, and below your orchestrator's kill timeout.
   */
  timeoutMs?: number
  /**
   * After closing: `true` (default) exits with 128 + the signal's number (143 for SIGTERM, 130
   * for SIGINT), as a process killed by that signal would report; a function is called with that
   * code instead; `false` leaves exiting to you. With `true`, a second signal during the
   * shutdown exits at once.
   */
  exit?: boolean | ((code: number) => void)
  /** Where a close() that threw or the timeout is reported. Default: a process warning. */
  onError?: (error: Error) => void
}

/**
 * What `closeOnSignals()` returns: the set of things closed on a signal, and the shutdown itself.
 */
export class Shutdown {
  readonly #closables = new Set<Closable>()
  readonly #signals: NodeJS.Signals[]
  readonly #timeoutMs: number
  readonly #exit: boolean | ((code: number) => void)
  readonly #onError: (error: Error) => void
  readonly #listeners = new Map<NodeJS.Signals, () => void>()
  #closing: Promise<boolean> | undefined

  /** @internal Use closeOnSignals(). */
  constructor(options: ShutdownOptions) {
    checkOptions(options, ['signals', 'timeoutMs', 'exit', 'onError'], 'shutdown')
    const signals = options.signals ?? ['SIGTERM', 'SIGINT']
    if (
      !Array.isArray(signals) ||
      signals.length === 0 ||
      signals.some(
        (s) =>
          typeof s !== 'string' || !(s in constants.signals) || s === 'SIGKILL' || s === 'SIGSTOP',
      )
    ) {
      throw new OptionsError(
        'signals',
        signals,
        'signals must be a non-empty list of catchable signal names, e.g. ["SIGTERM", "SIGINT"].',
      )
    }
    const timeoutMs = optionalMilliseconds('timeoutMs', options.timeoutMs, 10_000, 0)
    const exit = options.exit ?? true
    if (typeof exit !== 'boolean' && typeof exit !== 'function')
      throw new OptionsError('exit', exit, 'exit is true, false or a function(code).')
    this.#signals = [...new Set(signals)]
    this.#timeoutMs = timeoutMs
    this.#exit = exit
    this.#onError =
      options.onError ??
      ((error) => process.emitWarning(`conclave: shutdown: ${error.message}`, 'ConclaveWarning'))
  }

  /** Registers more things to close on shutdown. */
  add(...closables: Closable[]): this {
    for (const closable of closables) {
      if (typeof (closable as Partial<Closable> | null)?.close !== 'function')
        throw new OptionsError(
          'closable',
          closable,
          'Register objects with a close() method (an Election, a Singleton).',
        )
      this.#closables.add(closable)
    }
    return this
  }

  /** Unregisters (e.g. an election closed by other means). */
  delete(closable: Closable): boolean {
    return this.#closables.delete(closable)
  }

  get closing(): boolean {
    return this.#closing !== undefined
  }

  /**
   * Closes everything registered, all at once; resolves `true` when all closed within
   * `timeoutMs`, `false` when the bound passed first (what is still closing goes on). Idempotent.
   */
  close(): Promise<boolean> {
    this.#closing ??= (async () => {
      const all = Promise.all(
        [...this.#closables].map(async (closable) => {
          try {
            await closable.close()
          } catch (error) {
            this.#onError(error instanceof Error ? error : new Error(String(error)))
          }
        }),
      ).then(() => true)
      let timer: NodeJS.Timeout | undefined
      const bound = new Promise<false>((resolve) => {
        timer = setTimeout(resolve, this.#timeoutMs, false)
        timer.unref()
      })
      const inTime = await Promise.race([all, bound])
      clearTimeout(timer)
      if (!inTime) {
        this.#onError(
          new Error(
            `closing took longer than ${this.#timeoutMs} ms; giving up on what is still closing (its grants expire with their lease)`,
          ),
        )
      }
      return inTime
    })()
    return this.#closing
  }

  /** Removes the signal handlers (registered objects are kept). */
  uninstall(): void {
    for (const [signal, listener] of this.#listeners) process.off(signal, listener)
    this.#listeners.clear()
  }

  /** @internal */
  install(): this {
    for (const signal of this.#signals) {
      const listener = () => this.#onSignal(signal)
      this.#listeners.set(signal, listener)
      process.on(signal, listener)
    }
    return this
  }

  #onSignal(signal: NodeJS.Signals): void {
    const code = 128 + constants.signals[signal]
    if (this.#closing) {
      if (this.#exit === true) process.exit(code)
      return
    }
    // If nothing else keeps the process alive while closing, it still ends with this code.
    if (this.#exit === true) process.exitCode = code
    void this.close().then(() => {
      if (this.#exit === true) process.exit(code)
      if (typeof this.#exit !== 'function') return
      try {
        this.#exit(code)
      } catch (error) {
        this.#onError(error instanceof Error ? error : new Error(String(error)))
      }
    })
  }
}

/**
 * Installs SIGTERM/SIGINT handling (by default) that closes every closable given here or added
 * later, then exits. Returns the Shutdown, to `add()` more or to `uninstall()`.
 *
 * ```ts
 * const shutdown = closeOnSignals([election, singleton], { timeoutMs: 10_000 })
 * ```
 */
export function closeOnSignals(
  closables: Iterable<Closable> = [],
  options: ShutdownOptions = {},
): Shutdown {
  if (typeof options !== 'object' || options === null)
    throw new OptionsError('options', options, 'Shutdown options must be an object.')
  const shutdown = new Shutdown(options)
  shutdown.add(...closables)
  return shutdown.install()
}
