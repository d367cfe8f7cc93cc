/**
 * Batched renewal: every term held through one backend with the same renew cadence is
 * renewed by one `backend.renew([...])` call per tick, so holding 10,000 resources costs one
 * round trip per tick instead of 10,000. Waiting campaigns ride in the same batch with a
 * `queued` request that keeps their place in the resource's line (first come, first served).
 * Ticks never overlap (a re-entrancy guard), and after an error the next tick comes after a
 * jittered backoff instead of the full period.
 */
import type { Backend, RenewRequest } from './backend.js'
import type { Clock, ClockTimer } from './clock.js'
import { backoff } from './options.js'

/**
 * One grant (or, with `request.queued`, one place in line) renewed by the batch. A queued
 * member's `renewed` means its place was kept (nothing else: it holds no term), and its `lost`
 * means "ask again now" (its place is gone, or a ticket is free for it).
 */
export interface RenewalMember {
  readonly request: RenewRequest
  readonly ended: boolean
  /** The backend confirmed the grant; `sentAt` is when the request left (the deadline's base). */
  renewed(sentAt: number): void
  /** The backend says the grant is gone. */
  lost(): void
  /** The outcome is unknown; the member keeps its deadline. */
  failed(error: unknown): void
}

class RenewalGroup {
  readonly members = new Set<RenewalMember>()
  #timer: ClockTimer | undefined = undefined
  /** When the scheduled tick fires (clock time), while one is scheduled. */
  #timerAt = 0
  /** A member joined during a tick wants the next one by then (clock time). */
  #dueBy: number | undefined
  #running = false
  #attempt = 0

  constructor(
    readonly backend: Backend,
    readonly clock: Clock,
    readonly renewMs: number,
    readonly retryMs: number,
    readonly onEmpty: () => void,
  ) {}

  /**
   * Adds a member; `dueBy` (clock time): its first renewal must leave by then (a grant handed
   * on with less of its lease left than a fresh one), so the next tick comes no later.
   */
  add(member: RenewalMember, dueBy?: number): void {
    this.members.add(member)
    if (this.#running) {
      if (dueBy !== undefined) this.#dueBy = Math.min(this.#dueBy ?? dueBy, dueBy)
      return
    }
    if (this.#timer === undefined) this.#schedule(this.#until(dueBy, this.renewMs))
    else if (dueBy !== undefined && dueBy < this.#timerAt) {
      this.clock.clearTimeout(this.#timer)
      this.#schedule(this.#until(dueBy, this.renewMs))
    }
  }

  /** The delay to the next tick: `ms`, or sooner when something is due by `dueBy`. */
  #until(dueBy: number | undefined, ms: number): number {
    return dueBy === undefined ? ms : Math.max(0, Math.min(ms, dueBy - this.clock.now()))
  }

  remove(member: RenewalMember): void {
    this.members.delete(member)
    if (this.members.size === 0 && !this.#running) {
      if (this.#timer !== undefined) this.clock.clearTimeout(this.#timer)
      this.#timer = undefined
      this.onEmpty()
    }
  }

  #schedule(ms: number): void {
    this.#timerAt = this.clock.now() + ms
    this.#timer = this.clock.setTimeout(() => void this.#tick(), ms)
  }

  async #tick(): Promise<void> {
    this.#timer = undefined
    const batch = [...this.members].filter((m) => !m.ended)
    if (batch.length === 0) return this.#settle(this.renewMs)
    this.#running = true
    const sentAt = this.clock.now()
    let next = this.renewMs
    try {
      const results = await this.backend.renew(batch.map((m) => m.request))
      if (!Array.isArray(results) || results.length !== batch.length) {
        throw new Error(
          `backend ${this.backend.name} answered a renewal of ${batch.length} grants and places with ${Array.isArray(results) ? results.length : typeof results} results`,
        )
      }
      this.#attempt = 0
      batch.forEach((member, i) => (results[i] ? member.renewed(sentAt) : member.lost()))
      // Keep the cadence from the send: a slow round trip does not push every later tick back.
      next = Math.max(0, sentAt + this.renewMs - this.clock.now())
    } catch (error) {
      for (const member of batch) member.failed(error)
      next = backoff(this.#attempt++, this.retryMs, this.renewMs)
    }
    this.#running = false
    this.#settle(next)
  }

  #settle(next: number): void {
    const dueBy = this.#dueBy
    this.#dueBy = undefined
    if (this.members.size === 0) this.onEmpty()
    else if (this.#timer === undefined) this.#schedule(this.#until(dueBy, next))
  }
}

/** Groups per backend, clock and cadence. */
const groups = new WeakMap<Backend, Map<Clock, Map<string, RenewalGroup>>>()

/**
 * Adds `member` to the batch of its backend, clock and cadence; `dueBy` (clock time): its first
 * renewal must leave by then. Returns the function that takes it out.
 */
export function joinRenewals(
  backend: Backend,
  clock: Clock,
  renewMs: number,
  retryMs: number,
  member: RenewalMember,
  dueBy?: number,
): () => void {
  let byClock = groups.get(backend)
  if (!byClock) groups.set(backend, (byClock = new Map<Clock, Map<string, RenewalGroup>>()))
  let byCadence = byClock.get(clock)
  if (!byCadence) byClock.set(clock, (byCadence = new Map<string, RenewalGroup>()))
  const key = `${renewMs}/${retryMs}`
  let group = byCadence.get(key)
  if (!group) {
    const cadence = byCadence
    group = new RenewalGroup(backend, clock, renewMs, retryMs, () => {
      if (cadence.get(key) === group) cadence.delete(key)
    })
    byCadence.set(key, group)
  }
  const joined = group
  joined.add(member, dueBy)
  return () => joined.remove(member)
}
