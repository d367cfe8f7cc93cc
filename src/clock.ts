/**
 * Time as the election core sees it. `now()` is monotonic (never jumps with the wall clock),
 * in milliseconds. Timers created through a clock never keep the process alive on their own.
 */
export interface Clock {
  /** Milliseconds on a monotonic clock. */
  now(): number
  /** Calls `fn` once after `ms` milliseconds of this clock. */
  setTimeout(fn: () => void, ms: number): ClockTimer
  /** Cancels a timer `setTimeout` returned. */
  clearTimeout(timer: ClockTimer): void
}

/** Whatever the clock's setTimeout returns; only handed back to its clearTimeout. */
export type ClockTimer = object | number

/** The real clock: `performance.now()` and Node's timers (the default of every election). */
export const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout(fn, ms) {
    const timer = setTimeout(fn, Math.max(0, ms))
    timer.unref()
    return timer
  },
  clearTimeout(timer) {
    clearTimeout(timer as NodeJS.Timeout)
  },
}

/** Resolves after `ms` on `clock`, or rejects with the signal's reason when it aborts. */
export function sleep(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason as Error)
      return
    }
    const onAbort = () => {
      clock.clearTimeout(timer)
      reject(signal!.reason as Error)
    }
    const timer = clock.setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}
