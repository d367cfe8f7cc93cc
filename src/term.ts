import type { Json } from './backend.js'
import type { Clock, ClockTimer } from './clock.js'
import { LeadershipLostError, type TermEndReason } from './errors.js'

/** @internal What a term needs from the election that owns it. */
export interface TermOwner {
  /** Ends the term (idempotent); resolves once the work drained and the grant was released. */
  end(state: TermState, reason: TermEndReason): Promise<void>
}

/** @internal The election's private view of a term: mutable deadline, timer, signal. */
export class TermState {
  deadline: number
  endReason: TermEndReason | undefined
  timer: ClockTimer | undefined
  endPromise: Promise<void> | undefined
  /**
   * The term's signal, made when first asked for (Node's AbortSignal is costly to make and to
   * fire): a term whose signal nobody took ends without one, and a signal first asked for after
   * the end is made aborted, with the same reason.
   */
  #controller: AbortController | undefined
  /** Why the term ended (the signal's reason), made when first needed. */
  #reason: (() => Error) | Error | undefined
  readonly term: Term
  resolveEnded!: (reason: TermEndReason) => void
  readonly ended: Promise<TermEndReason>
  /**
   * The election's own clean-ups (leave the renewal batch, stop the grant's watch), run once as
   * the term ends, just before its signal fires: plain calls, not listeners on the signal.
   */
  readonly cleanups: (() => void)[] = []

  constructor(
    readonly owner: TermOwner,
    readonly clock: Clock,
    init: {
      resource: string
      candidate: string
      token: number
      leaseMs: number
      metadata: Json
      deadline: number
    },
  ) {
    this.deadline = init.deadline
    this.ended = new Promise((resolve) => (this.resolveEnded = resolve))
    this.term = new Term(this, init)
  }

  /** The term's signal (see #controller). */
  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController()
      if (this.#reason !== undefined) this.#controller.abort(this.reason)
    }
    return this.#controller.signal
  }

  /** The ended term's reason (undefined while it lasts); `abort` says how to make it. */
  get reason(): Error | undefined {
    if (typeof this.#reason === 'function') this.#reason = this.#reason()
    return this.#reason
  }

  /** Fires the signal, if anyone took it, with the reason `make` makes (once, when needed). */
  abort(make: () => Error): void {
    if (this.#reason !== undefined) return
    this.#reason = make
    this.#controller?.abort(this.reason)
  }

  /** Reads the monotonic clock: a term past its deadline ends now, even if its timer is late. */
  isActive(): boolean {
    if (this.endReason) return false
    if (this.clock.now() >= this.deadline) {
      void this.owner.end(this, 'expired')
      return false
    }
    return true
  }
}

let readState: (term: Term) => TermState

/** @internal The election's view of one of its terms. */
export function stateOf(term: Term): TermState {
  return readState(term)
}

/**
 * One unbroken period of holding a grant. Its signal aborts (with a LeadershipLostError) the
 * moment the term ends, which is always before the backend can grant the resource to anyone
 * else. `active` and `assertActive()` read the clock, so a stalled process learns it too.
 */
export class Term implements AsyncDisposable {
  readonly resource: string
  readonly candidate: string
  /** The fencing token: larger than every token granted before on this resource. */
  readonly token: number
  readonly leaseMs: number
  readonly metadata: Json
  /** Resolves with the reason once the term ended and its grant was released. */
  readonly ended: Promise<TermEndReason>
  readonly #state: TermState

  static {
    // The election finds a term's state through the term itself, not a WeakMap per election.
    readState = (term) => term.#state
  }

  /** @internal Terms are made by an Election. */
  constructor(
    state: TermState,
    init: { resource: string; candidate: string; token: number; leaseMs: number; metadata: Json },
  ) {
    this.#state = state
    this.resource = init.resource
    this.candidate = init.candidate
    this.token = init.token
    this.leaseMs = init.leaseMs
    this.metadata = init.metadata
    this.ended = state.ended
  }

  /** Aborts (with a LeadershipLostError) the moment the term ends. */
  get signal(): AbortSignal {
    return this.#state.signal
  }

  /** The monotonic instant (the election clock's `now()`) at which the term ends unless renewed. */
  get deadline(): number {
    return this.#state.deadline
  }

  /** Milliseconds left before the deadline (0 once ended). */
  get remainingMs(): number {
    return this.active ? Math.max(0, this.#state.deadline - this.#state.clock.now()) : 0
  }

  get active(): boolean {
    return this.#state.isActive()
  }

  /** Why the term ended, or undefined while it lasts. */
  get endReason(): TermEndReason | undefined {
    this.#state.isActive()
    return this.#state.endReason
  }

  /** Throws a LeadershipLostError if the term has ended: call it before each side effect. */
  assertActive(): void {
    if (!this.active) {
      const reason = this.#state.reason
      throw reason instanceof LeadershipLostError
        ? reason
        : new LeadershipLostError(this.resource, this.token, this.#state.endReason ?? 'expired')
    }
  }

  /** Steps down: aborts the signal, releases the grant, resolves when released. */
  resign(): Promise<void> {
    return this.#state.owner.end(this.#state, 'resigned')
  }

  /** `await using term = await election.campaign()`: resigns the term. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.resign()
  }
}
