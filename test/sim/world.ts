/**
 * The simulated world of the deterministic simulation: one manual clock, one memory store,
 * and per candidate a `SimBackend` that delays, loses, re-sends and reorders calls, fails
 * while its path is cut, and can be closed (dropping the grants made through it, as closing
 * an etcd backend revokes its lease). Everything random comes from one seeded PRNG, so a
 * seed replays a run exactly.
 */
import type {
  AcquireRequest,
  AcquireResult,
  Backend,
  Holder,
  ReleaseRequest,
  RenewRequest,
  Unwatch,
  WatchChange,
} from '../../src/backend.js'
import { CloseGate } from '../../src/backends/kit.js'
import { MemoryBackend } from '../../src/backends/memory.js'
import { ManualClock } from '../helpers/manual-clock.js'

/** mulberry32: small, fast, good enough to drive schedules. */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** What the world records about every backend call, for the invariants. */
export interface CallLog {
  /** Releases the core sent, by token (a token-less withdrawal is not counted here). */
  releases: Map<number, number>
  /** Tokens some acquire answer carried: a term with another token took a pushed grant. */
  answered: Set<number>
}

/** Wait `ms` on the manual clock. */
function wait(clock: ManualClock, ms: number): Promise<void> {
  return new Promise((resolve) => clock.setTimeout(resolve, ms))
}

/**
 * One candidate's path to the shared store. Each call waits a random delay before the store
 * applies it and another before the answer arrives (so calls reorder); an answer may be lost
 * after the call was applied (and the call may then be applied a second time later, as a
 * retransmission would); while `cutUntil` lies ahead, calls fail without reaching the store.
 */
export class SimBackend implements Backend {
  readonly name = 'sim'
  readonly #gate = new CloseGate('sim')
  readonly #inner: Backend
  /** Resources this backend acquired on, so close() can drop what it holds. */
  readonly #touched = new Set<string>()
  cutUntil = 0
  lossRate = 0
  maxDelayMs = 0
  /**
   * No push ever arrives (a subscriber cut off from its server): only the core's timers and
   * its queued renewals can move a waiter.
   */
  deaf = false

  constructor(
    readonly clock: ManualClock,
    readonly store: MemoryBackend,
    readonly candidate: string,
    readonly random: () => number,
    readonly log: CallLog,
  ) {
    this.#inner = store.handle('sim')
  }

  /** True once close() began. */
  get closing(): boolean {
    return this.#gate.closing
  }

  async #call<T>(apply: () => Promise<T>, resend = false): Promise<T> {
    this.#gate.check()
    const delay = () => Math.floor(this.random() * (this.maxDelayMs + 1))
    await wait(this.clock, delay())
    if (this.clock.now() < this.cutUntil) throw new Error('sim: path to the backend is cut')
    const value = await apply()
    await wait(this.clock, delay())
    if (this.random() < this.lossRate) {
      // Applied, but the answer never arrives; sometimes the request lands once more later.
      if (resend && this.random() < 0.5) {
        void wait(this.clock, delay() + 1).then(() => apply().catch(() => {}))
      }
      throw new Error('sim: the answer was lost')
    }
    return value
  }

  async acquire(request: AcquireRequest): Promise<AcquireResult> {
    this.#touched.add(request.resource)
    const result = await this.#call(() => this.#inner.acquire(request), true)
    if (result.acquired) this.log.answered.add(result.token)
    return result
  }

  renew(requests: RenewRequest[]): Promise<boolean[]> {
    return this.#call(() => this.#inner.renew(requests), true)
  }

  release(request: ReleaseRequest): Promise<void> {
    if (request.token !== undefined) {
      this.log.releases.set(request.token, (this.log.releases.get(request.token) ?? 0) + 1)
    }
    return this.#call(() => this.#inner.release(request), true)
  }

  holders(resource: string): Promise<Holder[]> {
    return this.#call(() => this.#inner.holders(resource))
  }

  watch(resource: string, onChange: (change?: WatchChange) => void): Promise<Unwatch> {
    return this.#call(() =>
      this.#inner.watch(resource, (change) => {
        if (!this.deaf) onChange(change)
      }),
    )
  }

  onClose(hook: () => Promise<void>): () => void {
    return this.#gate.onClose(hook)
  }

  /** Like closing an etcd backend: after the hooks, the grants made through it are revoked. */
  close(): Promise<void> {
    return this.#gate.close(async () => {
      for (const resource of this.#touched) {
        await this.store.release({ resource, candidate: this.candidate })
      }
      await this.#inner.close()
    })
  }
}
