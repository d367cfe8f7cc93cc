import type { Clock, ClockTimer } from '../../src/clock.js'

interface Timer {
  at: number
  seq: number
  fn: () => void
}

/**
 * A clock that moves only when told. `advance(ms)` runs due timers in time order and lets
 * promise callbacks settle between them, so async code reacts as it would in real time.
 */
export class ManualClock implements Clock {
  #now: number
  #seq = 0
  readonly #timers = new Set<Timer>()

  constructor(start = 1_000) {
    this.#now = start
  }

  now(): number {
    return this.#now
  }

  setTimeout(fn: () => void, ms: number): ClockTimer {
    const timer: Timer = { at: this.#now + Math.max(0, ms), seq: this.#seq++, fn }
    this.#timers.add(timer)
    return timer
  }

  clearTimeout(timer: ClockTimer): void {
    this.#timers.delete(timer as Timer)
  }

  get pending(): number {
    return this.#timers.size
  }

  /** Moves time forward by `ms`, firing every timer that falls due on the way. */
  async advance(ms: number): Promise<void> {
    const end = this.#now + ms
    await settle()
    for (;;) {
      const next = [...this.#timers]
        .filter((t) => t.at <= end)
        .sort((a, b) => a.at - b.at || a.seq - b.seq)[0]
      if (!next) break
      this.#timers.delete(next)
      this.#now = Math.max(this.#now, next.at)
      next.fn()
      await settle()
    }
    this.#now = end
    await settle()
  }

  /** Jumps the clock without firing timers: a stalled event loop, as the process sees it. */
  jump(ms: number): void {
    this.#now += ms
  }
}

/** Lets queued promise callbacks and microtasks run. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise<void>((resolve) => setImmediate(resolve))
}
