/**
 * Combining abort signals without Node 20's `AbortSignal.any`, whose result can be garbage
 * collected before it fires (nodejs/node#57736): here each source holds the combined
 * controller through its listener, so the combined signal lives as long as any source.
 */

/** A signal that aborts (with the first source's reason) when any source aborts. */
export interface CombinedSignal {
  readonly signal: AbortSignal
  /** Removes the listeners from the sources; call it when the combined signal is done with. */
  dispose(): void
}

/** Combines `signals` (undefined entries are skipped); see CombinedSignal. */
export function anySignal(signals: readonly (AbortSignal | undefined)[]): CombinedSignal {
  const sources = signals.filter((s): s is AbortSignal => s !== undefined)
  // One source is its own combination: no controller, no listener (a campaign without a signal
  // of its own runs on the election's close signal alone, once per acquire).
  if (sources.length === 1) return { signal: sources[0]!, dispose: noop }
  const controller = new AbortController()
  const onAbort = (event: Event) => {
    dispose()
    controller.abort((event.target as AbortSignal).reason)
  }
  const dispose = () => {
    for (const source of sources) source.removeEventListener('abort', onAbort)
  }
  const aborted = sources.find((s) => s.aborted)
  if (aborted) controller.abort(aborted.reason)
  else for (const source of sources) source.addEventListener('abort', onAbort)
  return { signal: controller.signal, dispose }
}

function noop(): void {}

/**
 * @internal A campaign's stop: what an AbortSignal does for the core (aborted, reason,
 * throwIfAborted, listeners fired once, in the order they were added) without being one. Node's
 * AbortSignal costs an EventTarget to make and to listen on, which a campaign that wins at its
 * first ask (most of them) would pay for nothing; this is a Set of functions.
 */
export class Stop {
  aborted = false
  reason: unknown = undefined
  readonly #listeners = new Set<() => void>()

  /** Aborts once: later calls keep the first reason. */
  abort(reason: unknown): void {
    if (this.aborted) return
    this.aborted = true
    this.reason = reason
    const listeners = [...this.#listeners]
    this.#listeners.clear()
    for (const listener of listeners) listener()
  }

  /** Throws the reason once aborted, as AbortSignal.throwIfAborted does. */
  throwIfAborted(): void {
    if (this.aborted) throw this.reason
  }

  /** Calls `fn` once on abort (never if already aborted); returns its removal. */
  onAbort(fn: () => void): () => void {
    const entry = () => fn()
    this.#listeners.add(entry)
    return () => void this.#listeners.delete(entry)
  }
}

/** Listens once for `signal`'s abort, a Stop or an AbortSignal; returns the removal. */
export function onAbort(signal: Stop | AbortSignal, fn: () => void): () => void {
  if (signal instanceof Stop) return signal.onAbort(fn)
  signal.addEventListener('abort', fn, { once: true })
  return () => signal.removeEventListener('abort', fn)
}
