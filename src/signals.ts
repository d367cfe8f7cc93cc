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
