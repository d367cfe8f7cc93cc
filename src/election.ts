/**
 * The election core: campaigns, terms, renewal timing, drain-then-release, re-campaign,
 * observation. All timing policy lives here; backends only store grants.
 */
import { AsyncLocalStorage } from 'node:async_hooks'
import { EventEmitter } from 'node:events'
import type { AcquireResult, Backend, Holder, Unwatch, WatchChange } from './backend.js'
import { validateResource } from './validate.js'
import { type Clock, sleep } from './clock.js'
import {
  BackendTimeoutError,
  BusyError,
  ElectionClosedError,
  isFinal,
  type TermEndReason,
  LeadershipLostError,
  OptionsError,
  WorkError,
} from './errors.js'
import { backoff, type ElectionOptions, type ResolvedOptions, resolveOptions } from './options.js'
import { joinRenewals, type RenewalMember } from './renewer.js'
import { anySignal, onAbort, Stop } from './signals.js'
import { stateOf, type Term, TermState } from './term.js'
import { publish, tracing } from './trace.js'

/**
 * A waiter further back than the next in line asks again at least once in this many leases: a
 * safety net for a wake-up lost unseen (an etcd watch on a member cut off from its quorum stays
 * connected but silent). Rare enough to cost under 0.1 requests per waiter per lease.
 */
const FAR_WAITER_LEASES = 16

/** Why a campaign waits (the `waiting` event): every ticket held, or the backend's own wait. */
export interface WaitingInfo {
  /**
   * `held` (the holders fill every ticket), `queued` (waiters ahead in line have the free
   * tickets' turn), `no-grant` (refused with fewer holders in sight), or the backend's code
   * (`startup-grace`, ...).
   */
  code: string
  /** One sentence for people. */
  reason: string
  /**
   * When a ticket can next free up (the backend's answer), in ms. A candidate next in line
   * (`ahead` below `tickets`) asks again then unless woken first; one further back waits for
   * its turn (a release's wake-up, or its queued renewal saying so; at most 16 leases).
   */
  retryInMs: number
  /** The holders the backend answered with. */
  holders: Holder[]
  /**
   * Waiters in line before this candidate when the backend answered (0: it is first). Absent
   * when the backend keeps no line.
   */
  ahead?: number
}

/** The events an Election emits, with their arguments. */
export interface ElectionEvents {
  elected: [term: Term]
  revoked: [term: Term, reason: TermEndReason]
  /** A renewal succeeded: the deadline moved to `sentAt + leaseMs - marginMs`. */
  renewed: [term: Term, info: { sentAt: number; roundTripMs: number }]
  leader: [holders: Holder[]]
  /** A campaign's ask was answered without a grant: why, and when it asks again. */
  waiting: [info: WaitingInfo]
  error: [error: Error]
}

/** A waiting campaign's place in line, kept by the renewal batch while it is joined. */
interface QueuedPlace {
  readonly joined: boolean
  join(): void
  leave(): void
}

/** Which election's work (run callback) the current async context belongs to. */
const workContext = new AsyncLocalStorage<Election>()

const BACKEND_METHODS = [
  'acquire',
  'renew',
  'release',
  'holders',
  'watch',
  'onClose',
  'close',
] as const

/**
 * One process's candidacy for a resource on a backend: campaign for terms, run work in each,
 * observe who leads. See the README's API section.
 */
export class Election extends EventEmitter<ElectionEvents> implements AsyncDisposable {
  readonly backend: Backend
  readonly resource: string
  /** This candidate's id. */
  readonly id: string
  readonly options: Readonly<ResolvedOptions>
  readonly #clock: Clock
  /**
   * The close signal of run() and observe(), made at their first use (an AbortSignal is costly
   * to make); a campaign stops on close through #stops instead.
   */
  #closeController: AbortController | undefined
  /** close() began aborting: what is made or asked for from now on starts aborted. */
  #aborted = false
  #closeReason: ElectionClosedError | undefined
  /** The campaign in progress (one at most: a second is busy), which close() stops. */
  #stop: Stop | undefined
  #closing: Promise<void> | undefined
  #current: TermState | undefined
  #loop: { promise: Promise<Term | undefined>; signal: Stop } | undefined
  #running = false
  /** The run() callback now running; it may outlive its term, and close() drains it too. */
  #work: Promise<void> | undefined
  #leaderWatch: AbortController | undefined
  #warned = false
  /** A release failed: a grant of ours may survive, so withdraw it before asking again. */
  #mustWithdraw = false
  readonly #offBackendClose: () => void

  constructor(backend: Backend, resource: string, options: ElectionOptions = {}) {
    super()
    if (
      typeof backend !== 'object' ||
      backend === null ||
      BACKEND_METHODS.some(
        (m) => typeof (backend as unknown as Record<string, unknown>)[m] !== 'function',
      )
    ) {
      throw new OptionsError(
        'backend',
        backend,
        `A backend is an object with ${BACKEND_METHODS.join(', ')} methods, e.g. memoryBackend() or clusterBackend().`,
      )
    }
    this.backend = backend
    this.resource = validateResource(resource)
    this.options = Object.freeze(resolveOptions(options))
    this.id = this.options.id
    // A chosen id may be a restarted process's: its old grant may still live on the backend,
    // and asking would continue it (and its token) in a new term. A default id is new.
    this.#mustWithdraw = options.id !== undefined
    this.#clock = this.options.clock
    ;(this as EventEmitter).on('newListener', (event: string | symbol) => {
      if (event === 'leader' && !this.#leaderWatch && !this.#closing) this.#startLeaderWatch()
    })
    // Closing the backend closes this election first: the term ends and its grant is
    // released before the backend gives up anything (a revoked lease, a closed pool).
    this.#offBackendClose = backend.onClose(() => this.close())
  }

  /** True while this candidate holds an active term (reads the clock). */
  get isLeader(): boolean {
    return this.#current?.isActive() ?? false
  }

  /** The current term, while it lasts. */
  get term(): Term | undefined {
    return this.#current?.isActive() ? this.#current.term : undefined
  }

  get closed(): boolean {
    return this.#closing !== undefined
  }

  /**
   * Campaigns until this candidate holds a grant, then resolves with its term. Resolves at once
   * with the current term if one is active. Rejects with the signal's reason on abort, or an
   * ElectionClosedError once the election is closed.
   */
  async campaign(options: { signal?: AbortSignal } = {}): Promise<Term> {
    return (await this.#campaign(options, false))!
  }

  /**
   * One attempt: resolves with a term when this candidate holds (or just won) a grant, or with
   * `undefined` when another holds it (any place it took in a queue is withdrawn first), for
   * "do it if nobody else is". A backend error rejects (no retry). Same rules as campaign()
   * otherwise.
   */
  tryCampaign(options: { signal?: AbortSignal } = {}): Promise<Term | undefined> {
    return this.#campaign(options, true)
  }

  async #campaign(options: { signal?: AbortSignal }, once: boolean): Promise<Term | undefined> {
    if (this.#closing) throw new ElectionClosedError(this.resource)
    options.signal?.throwIfAborted()
    if (this.#current?.isActive()) return this.#current.term
    if (this.#current) await this.#current.endPromise
    if (this.#loop) {
      if (!this.#loop.signal.aborted) throw new BusyError(this.resource, 'campaigning')
      // An aborted campaign may still be withdrawing: let it finish so two never overlap.
      await this.#loop.promise.catch(() => {})
    }
    if (this.#closing) throw new ElectionClosedError(this.resource)
    if (this.#loop) throw new BusyError(this.resource, 'campaigning')
    // The caller's signal or close(), whichever comes first (anySignal's rule, without making
    // an AbortSignal per campaign).
    const signal = new Stop()
    const user = options.signal
    const onUser = () => signal.abort(user!.reason)
    if (user?.aborted) onUser()
    else user?.addEventListener('abort', onUser)
    this.#stop = signal
    const promise = this.#acquireLoop(signal, once)
    const loop = { promise, signal }
    this.#loop = loop
    const done = () => {
      user?.removeEventListener('abort', onUser)
      if (this.#stop === signal) this.#stop = undefined
      if (this.#loop === loop) this.#loop = undefined
    }
    void promise.then(done, done)
    // A term won just as the caller gave up is handed back at once, never left orphaned.
    return raceAbort(promise, signal, (term) => void term?.resign())
  }

  /**
   * Calls `fn(term)` for every term this candidate wins, campaigning again after each term
   * ends, until the election is closed or `signal` aborts (which resolves the returned promise).
   * A throwing `fn` is reported as an `error` event and its term is resigned.
   */
  async run(fn: (term: Term) => unknown, options: { signal?: AbortSignal } = {}): Promise<void> {
    if (this.#closing) throw new ElectionClosedError(this.resource)
    if (typeof fn !== 'function')
      throw new OptionsError('fn', fn, 'run() takes a function called with each term.')
    if (this.#running) throw new BusyError(this.resource, 'running')
    this.#running = true
    const combined = anySignal([options.signal, this.#closeSignal()])
    const stop = combined.signal
    const onStop = () => {
      if (this.#current) void this.end(this.#current, 'resigned')
    }
    stop.addEventListener('abort', onStop)
    try {
      while (!stop.aborted) {
        let term: Term
        try {
          term = await this.campaign({ signal: stop })
        } catch (error) {
          if (stop.aborted || error instanceof ElectionClosedError) break
          throw error
        }
        const state = stateOf(term)
        // The term may have ended between the win and this line (close(), resign(), an abort
        // a microtask after 'elected'): its work must never start then.
        if (state.isActive() && !stop.aborted) {
          const work = workContext.run(this, async () => {
            try {
              await fn(term)
            } catch (error) {
              this.#report(new WorkError(this.resource, term.token, error))
              void this.end(state, 'resigned')
            }
          })
          this.#work = work
          await work
          this.#work = undefined
        }
        const reason = await term.ended
        if (reason === 'closed' || this.#closing) break
        // After stepping down, give a waiting candidate the first chance to take over.
        if (reason === 'resigned')
          await sleep(this.#clock, this.options.retryMs, stop).catch(() => {})
      }
    } finally {
      stop.removeEventListener('abort', onStop)
      combined.dispose()
      this.#running = false
    }
  }

  /** Resigns the current term, if any; resolves once its grant is released. */
  async resign(): Promise<void> {
    if (this.#current) await this.end(this.#current, 'resigned')
  }

  /** The current holders of the resource, as the backend sees them. */
  leaders(): Promise<Holder[]> {
    return this.backend.holders(this.resource)
  }

  /**
   * The holders now, then again each time they change (pushed by the backend, plus a wake-up
   * when a grant can expire). Ends when the election closes or `signal` aborts.
   */
  async *observe(
    options: { signal?: AbortSignal } = {},
  ): AsyncGenerator<Holder[], void, undefined> {
    const combined = anySignal([options.signal, this.#closeSignal()])
    const stop = combined.signal
    let woken = false
    let wake: (() => void) | undefined
    let unwatch: Unwatch | undefined
    let last: string | undefined
    let attempt = 0
    try {
      while (!stop.aborted) {
        let waitMs: number
        try {
          unwatch ??= await this.backend.watch(this.resource, () => {
            woken = true
            wake?.()
          })
          woken = false
          const holders = await this.backend.holders(this.resource)
          attempt = 0
          const key = JSON.stringify(holders.map((h) => [h.candidate, h.token, h.metadata]))
          if (key !== last) {
            last = key
            yield holders
          }
          waitMs = holders.length
            ? Math.min(...holders.map((h) => h.remainingMs)) + 1
            : this.options.leaseMs
        } catch (error) {
          if (stop.aborted) break
          this.#report(error)
          waitMs = backoff(attempt++, this.options.retryMs, this.options.renewMs)
        }
        if (!woken) {
          const waitFor = Math.min(waitMs, this.options.leaseMs)
          // Aborting `stop` ends the iteration quietly: observing has no failure to report.
          await waitForWake(this.#clock, waitFor, stop, (fn) => (wake = fn)).catch(() => {})
        }
      }
    } finally {
      combined.dispose()
      wake = undefined
      if (unwatch) await unwatch().catch((error: unknown) => this.#report(error))
    }
  }

  /** Ends the current term (drain, release), stops campaigning and observing. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const ending = this.#current ? this.end(this.#current, 'closed') : undefined
      // The reason is made only for someone to be told (run, observe, a campaign in progress).
      this.#aborted = true
      if (this.#closeController) this.#closeController.abort(this.#closedError())
      this.#stop?.abort(this.#closedError())
      await ending
      await this.#loop?.promise.catch(() => {})
      // Work that outlived its term (it expired or was lost) still gets its drain.
      if (!ending && this.#work && workContext.getStore() !== this) await this.#drain(this.#work)
      this.#offBackendClose()
    })()
    return this.#closing
  }

  /** The signal close() aborts (see #closeController); aborted already once close() began. */
  #closeSignal(): AbortSignal {
    if (!this.#closeController) {
      this.#closeController = new AbortController()
      if (this.#aborted) this.#closeController.abort(this.#closedError())
    }
    return this.#closeController.signal
  }

  /** The one reason of everything close() stops. */
  #closedError(): ElectionClosedError {
    return (this.#closeReason ??= new ElectionClosedError(this.resource))
  }

  /** `await using election = new Election(...)`: closes the election. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  /** @internal Ends a term once: signal first, then drain the work, then release. */
  end(state: TermState, reason: TermEndReason): Promise<void> {
    if (state.endPromise) return state.endPromise
    // A call from inside the work itself must not wait for that work to finish.
    const fromWork = workContext.getStore() === this
    state.endReason = reason
    if (state.timer !== undefined) this.#clock.clearTimeout(state.timer)
    // Set before the signal fires: an abort listener that resigns gets this same promise,
    // so the grant is released once.
    state.endPromise = (async () => {
      await Promise.resolve() // let the signal and the revoked event go first
      const work = this.#work
      if (work && !fromWork) await this.#drain(work)
      // 'lost' means the backend already dropped the grant; anything else is released here.
      let released = false
      if (reason !== 'lost') {
        released = await this.#release(state.term.token)
        if (released && tracing('released'))
          publish('released', {
            resource: this.resource,
            candidate: this.id,
            token: state.term.token,
            reason,
          })
      }
      // A loss the backend did not write (a watch's read, a final error) may leave the grant
      // alive: withdraw it before the next ask, or that ask would continue its token.
      else this.#mustWithdraw = true
      // Exactly one end message per term, whether or not its release went through.
      if (tracing('ended'))
        publish('ended', {
          resource: this.resource,
          candidate: this.id,
          token: state.term.token,
          reason,
          released,
        })
      if (this.#current === state) this.#current = undefined
      state.resolveEnded(reason)
    })()
    // The election's own clean-ups, then the term's signal: the work steps down before
    // anything else runs.
    for (const cleanup of state.cleanups.splice(0)) cleanup()
    state.abort(() => endedError(this.resource, state.term.token, reason))
    if ((reason === 'lost' || reason === 'expired') && tracing('lost'))
      publish('lost', {
        resource: this.resource,
        candidate: this.id,
        token: state.term.token,
        reason,
      })
    this.#safeEmit('revoked', state.term, reason)
    return state.endPromise
  }

  /** Waits for `work`, at most drainMs. */
  async #drain(work: Promise<void>): Promise<void> {
    const drained = new AbortController()
    await Promise.race([
      work,
      sleep(this.#clock, this.options.drainMs, drained.signal).catch(() => {}),
    ])
    drained.abort() // no drain timer outlives the drain
  }

  /** Campaigns until a grant is won; with `once`, one ask only (undefined: not granted). */
  async #acquireLoop(signal: Stop, once = false): Promise<Term | undefined> {
    const { leaseMs, marginMs, retryMs, renewMs, tickets, metadata } = this.options
    let woken = false
    let wake: (() => void) | undefined
    let unwatch: Unwatch | undefined
    // The first ask goes out without a watch (most campaigns win at once); a candidate that
    // must wait watches first and then asks again, so no release can slip between the two.
    let needWatch = false
    let attempt = 0
    let won: Term | undefined
    // A grant a release made for this candidate's place in line (WatchChange.granted): it
    // lasts at least the lease from placedAt, the send time of the refused ask that queued it,
    // so it is held from there without asking again. (Not from a later queued renewal's: a
    // release may read the place before that renewal's keep commits, and grant the older
    // expiry.) One pushed while an ask is out is left to that ask's answer (or the next ask,
    // which finds the grant and extends it).
    let asking = false
    let placedAt: number | undefined
    let handed: number | undefined
    const onChange = (change?: WatchChange) => {
      // First come, first served: a change that names whom it wakes concerns only them.
      if (change?.wake && !change.wake.includes(this.id)) return
      const grant = change?.granted?.find((g) => g.candidate === this.id)
      if (grant && !asking && placedAt !== undefined) handed = grant.token
      woken = true
      wake?.()
    }
    // A refused ask took a place in the resource's line: the renewal batch keeps it. Made at
    // the first refusal (most campaigns win at their first ask).
    let place: QueuedPlace | undefined
    // Someone awaits this campaign: keep the process alive until it ends (all other timers
    // are unref'd, so an idle or merely holding election never keeps a process up).
    holdProcess()
    if (tracing('campaign'))
      publish('campaign', { resource: this.resource, candidate: this.id, tickets, leaseMs })
    try {
      for (;;) {
        signal.throwIfAborted()
        let waitMs: number
        try {
          if (this.#mustWithdraw) {
            // An earlier term's release failed, so its grant may live on; asking now would
            // hand that old grant (and its token) to a new term.
            handed = undefined // the withdrawal takes any grant made for the place
            await this.backend.release({ resource: this.resource, candidate: this.id })
            handed = undefined // and one pushed while it was out: that grant is gone too
            this.#mustWithdraw = false
            signal.throwIfAborted()
          }
          if (handed !== undefined && placedAt !== undefined) {
            const token = handed
            const deadline = placedAt + leaseMs - marginMs
            handed = undefined
            if (this.#clock.now() < deadline) {
              place?.leave() // the grant took the place
              return (won = this.#startTerm(token, deadline, true))
            }
            // Too late to count from that ask: ask again (it finds the grant and extends it).
          }
          if (needWatch) {
            unwatch ??= await this.backend.watch(this.resource, onChange)
            signal.throwIfAborted()
          }
          woken = false
          const sentAt = this.#clock.now()
          asking = true
          let result: AcquireResult
          try {
            result = await this.backend.acquire({
              resource: this.resource,
              candidate: this.id,
              tickets,
              leaseMs,
              metadata,
            })
          } finally {
            asking = false
          }
          attempt = 0
          handed = undefined
          if (result.acquired) {
            place?.leave() // the grant took the place
            const deadline = sentAt + leaseMs - marginMs
            // Aborted meanwhile: the withdrawal on the way out hands the grant back.
            signal.throwIfAborted()
            if (this.#clock.now() >= deadline) {
              await this.#release(result.token)
              // A timeout by another name: the answer came too late to hold the grant.
              throw new BackendTimeoutError(
                `acquire of "${this.resource}" took longer than the lease minus the margin (${leaseMs - marginMs} ms); released and retrying`,
              )
            }
            return (won = this.#startTerm(result.token, deadline))
          }
          if (once) return undefined
          place ??= this.#queuedMember(signal, () => {
            woken = true
            wake?.()
          })
          if (result.ahead === undefined) place.leave()
          else {
            place.join()
            placedAt = sentAt
          }
          if (!unwatch) {
            needWatch = true
            continue
          }
          // Only a candidate next in line asks again when a grant can expire: the others wait
          // for a wake-up naming them or their queued renewal's "ask again", and, in case a
          // backend's view of its line goes stale unseen, ask again after FAR_WAITER_LEASES.
          const next = result.ahead === undefined || result.ahead < tickets
          waitMs = next ? Math.min(result.retryInMs + 1, leaseMs) : FAR_WAITER_LEASES * leaseMs
          this.#waiting(result, signal)
        } catch (error) {
          if (signal.aborted) throw signal.reason
          // A closed backend, a tickets mismatch, a bad option: asking again cannot help.
          if (isFinal(error) || once) throw error
          this.#report(error)
          waitMs = backoff(attempt++, retryMs, renewMs)
          woken = false
          needWatch = true
        }
        if (!woken) await waitForWake(this.#clock, waitMs, signal, (fn) => (wake = fn))
      }
    } finally {
      releaseProcess()
      wake = undefined
      const queued = place?.joined ?? false
      place?.leave()
      if (unwatch) await unwatch().catch((error: unknown) => this.#report(error))
      // Withdraw a queued entry (or a grant whose answer we never saw) on the way out. A term
      // won is never withdrawn here, even if the abort came meanwhile: it is resigned (signal
      // first, then release), or a token-less release would free its grant while it is active.
      // A single ask that was not granted withdraws too: it may have queued (etcd does); so
      // does a campaign that stood in line and ends on a final error (its place would block
      // the line for a lease).
      if ((signal.aborted || once || queued) && !won) {
        await this.backend
          .release({ resource: this.resource, candidate: this.id })
          .catch((error: unknown) => {
            this.#mustWithdraw = true
            if (signal.aborted || once || !isFinal(error)) this.#report(error)
          })
      }
    }
  }

  /**
   * A campaign's place in line, kept by the renewal batch (one member per campaign) while it
   * waits: `renewed` keeps nothing but the place; `lost` (no place, or a ticket is free for it)
   * calls `askAgain`; an unknown outcome is reported and asks again after a backoff.
   */
  #queuedMember(signal: Stop, askAgain: () => void): QueuedPlace {
    const { leaseMs, renewMs, retryMs } = this.options
    let leave: (() => void) | undefined
    let retry: ReturnType<Clock['setTimeout']> | undefined
    let failures = 0
    const clock = this.#clock
    const stopRetry = () => {
      if (retry !== undefined) clock.clearTimeout(retry)
      retry = undefined
    }
    const member: RenewalMember = {
      request: { resource: this.resource, candidate: this.id, token: 0, leaseMs, queued: true },
      get ended() {
        return leave === undefined || signal.aborted
      },
      renewed: () => {
        failures = 0
      },
      lost: () => {
        if (signal.aborted) return
        stopRetry()
        askAgain()
      },
      failed: (error) => {
        if (signal.aborted) return
        // A closed backend: the ask fails for good at once, and the campaign says so.
        if (isFinal(error)) return askAgain()
        this.#report(error)
        retry ??= clock.setTimeout(
          () => {
            retry = undefined
            askAgain()
          },
          backoff(failures++, retryMs, renewMs),
        )
      },
    }
    return {
      get joined() {
        return leave !== undefined
      },
      join: () => {
        leave ??= joinRenewals(this.backend, clock, renewMs, retryMs, member)
      },
      leave: () => {
        stopRetry()
        const off = leave
        leave = undefined
        off?.()
      },
    }
  }

  /** `handedOn`: a grant a release made for this candidate's place (its deadline is older). */
  #startTerm(token: number, deadline: number, handedOn = false): Term {
    const { leaseMs, renewMs, retryMs, marginMs, metadata } = this.options
    const state = new TermState(this, this.#clock, {
      resource: this.resource,
      candidate: this.id,
      token,
      leaseMs,
      metadata,
      deadline,
    })
    this.#current = state
    const onTimer = () => {
      state.timer = undefined
      if (state.endReason) return
      const left = state.deadline - this.#clock.now()
      if (left <= 0) void this.end(state, 'expired')
      else state.timer = this.#clock.setTimeout(onTimer, left)
    }
    state.timer = this.#clock.setTimeout(onTimer, deadline - this.#clock.now())
    const member = new TermRenewal(state, {
      request: { resource: this.resource, candidate: this.id, token, leaseMs },
      renewed: (sentAt) => {
        if (state.endReason) return
        state.deadline = Math.max(state.deadline, sentAt + leaseMs - marginMs)
        const roundTripMs = this.#clock.now() - sentAt
        if (tracing('renewed'))
          publish('renewed', { resource: this.resource, candidate: this.id, token, roundTripMs })
        this.#safeEmit('renewed', state.term, { sentAt, roundTripMs })
      },
      lost: () => void this.end(state, 'lost'),
      failed: (error) => {
        if (!isFinal(error)) return this.#report(error)
        // A closed backend will never renew it: end the term now, not at its deadline. A term
        // that already ended (closing the backend ends its terms first) has nothing to say.
        if (state.endReason) return
        this.#report(error)
        void this.end(state, 'lost')
      },
    })
    // A grant handed on from a place in line may have far less of its lease left than a fresh
    // one: its first renewal leaves with as much to spare as a fresh term's would, not at the
    // batch's next tick, which may come after its deadline.
    const dueBy = handedOn ? deadline - (leaseMs - marginMs - renewMs) : undefined
    const leave = joinRenewals(this.backend, this.#clock, renewMs, retryMs, member, dueBy)
    state.cleanups.push(leave)
    void this.#watchGrant(state)
    if (tracing('elected'))
      publish('elected', { resource: this.resource, candidate: this.id, token, leaseMs })
    this.#safeEmit('elected', state.term)
    return state.term
  }

  /**
   * Watches the term's own grant, so a grant deleted behind our back (an operator's `del`, a
   * revoked lease) ends the term at the change when the backend names the grant in
   * `WatchChange.ended`, else within a round trip of it; not at the next renewal.
   * Best effort: if the watch fails, the renewals still guard the term.
   */
  async #watchGrant(state: TermState): Promise<void> {
    const { token } = state.term
    let checking = false
    let again = false
    const check = async () => {
      if (checking) return void (again = true)
      checking = true
      try {
        do {
          again = false
          const holders = await this.backend.holders(this.resource)
          // Tokens are never granted twice: a grant missing from an answer is gone for good.
          if (
            !state.endReason &&
            !holders.some((h) => h.candidate === this.id && h.token === token)
          )
            void this.end(state, 'lost')
        } while (again && !state.endReason)
      } catch {
        // Unknown: the next renewal decides.
      } finally {
        checking = false
      }
    }
    let unwatch: Unwatch
    try {
      unwatch = await this.backend.watch(this.resource, (change) => {
        // The change itself says the grant went: end now, not a round trip later, since a
        // waiter this change frees a ticket for is granted one round trip from now.
        if (change?.ended?.some((g) => g.candidate === this.id && g.token === token)) {
          if (!state.endReason) void this.end(state, 'lost')
          return
        }
        void check()
      })
    } catch {
      return
    }
    const stop = () => void unwatch().catch(() => {})
    if (state.endReason) stop()
    else state.cleanups.push(stop)
  }

  /** Releases the grant with `token`; false when that failed (reported). */
  async #release(token: number): Promise<boolean> {
    try {
      await this.backend.release({ resource: this.resource, candidate: this.id, token })
      return true
    } catch (error) {
      // The lease expires on its own; a failed release only delays the next holder. The
      // next campaign withdraws first, so a new term never continues this grant.
      this.#mustWithdraw = true
      this.#report(error)
      return false
    }
  }

  /** Says why a campaign waits: the `waiting` event and the trace. */
  #waiting(result: AcquireResult & { acquired: false }, signal: Stop): void {
    // A campaign stopped while its ask was out is not waiting any more: say nothing.
    if (signal.aborted) return
    const { holders, retryInMs, ahead } = result
    const { tickets } = this.options
    const names = holders.map((h) => h.candidate)
    const shown =
      names.length > 3
        ? `${names.slice(0, 3).join(', ')} and ${names.length - 3} more`
        : names.join(', ')
    const line = ahead ? `; ${ahead} ${ahead === 1 ? 'waiter' : 'waiters'} ahead in line` : ''
    const extra = ahead === undefined ? {} : { ahead }
    // `held` only when the holders in sight fill every ticket; `queued` when the waiters
    // ahead take the free ones; anything else (holders the backend could not read, or none in
    // sight) is a refusal without a full house.
    const info: WaitingInfo = result.wait
      ? { ...result.wait, retryInMs, holders, ...extra }
      : holders.length >= tickets
        ? {
            code: 'held',
            reason: `every ticket (${tickets}) is held${shown ? ` by ${shown}` : ''}${line}`,
            retryInMs,
            holders,
            ...extra,
          }
        : ahead !== undefined && holders.length + ahead >= tickets
          ? {
              code: 'queued',
              reason: `first come, first served: ${ahead} ${ahead === 1 ? 'waiter' : 'waiters'} ahead in line take the free tickets (${holders.length} of ${tickets} held${shown ? ` by ${shown}` : ''})`,
              retryInMs,
              holders,
              ahead,
            }
          : {
              code: 'no-grant',
              reason: `the backend granted nothing (${holders.length} of ${tickets} tickets held${shown ? ` by ${shown}` : ''}${line}); asking again in ${Math.round(retryInMs)} ms`,
              retryInMs,
              holders,
              ...extra,
            }
    if (tracing('waiting'))
      publish('waiting', {
        resource: this.resource,
        candidate: this.id,
        code: info.code,
        reason: info.reason,
        retryInMs,
        holders: holders.length,
        ...extra,
      })
    this.#safeEmit('waiting', info)
  }

  #startLeaderWatch(): void {
    const controller = new AbortController()
    this.#leaderWatch = controller
    void (async () => {
      try {
        for await (const holders of this.observe({ signal: controller.signal })) {
          this.#safeEmit('leader', holders)
        }
      } catch (error) {
        this.#report(error)
      }
    })()
  }

  #safeEmit<K extends keyof ElectionEvents>(event: K, ...args: ElectionEvents[K]): void {
    try {
      ;(this.emit as (e: K, ...a: ElectionEvents[K]) => boolean)(event, ...args)
    } catch (error) {
      if (event !== 'error') this.#report(error)
    }
  }

  #report(error: unknown): void {
    const err = error instanceof Error ? error : new Error(String(error))
    if (tracing('error'))
      publish('error', { resource: this.resource, candidate: this.id, error: err })
    if (this.listenerCount('error') > 0) {
      this.#safeEmit('error', err)
    } else if (!this.#warned) {
      // Never throw from here (that would be an unhandled error); say it once instead.
      this.#warned = true
      process.emitWarning(
        `conclave: election on "${this.resource}" hit an error and has no 'error' listener: ${err.message}`,
        'ConclaveWarning',
      )
    }
  }
}

/**
 * A term's member of the renewal batch. A class, not an object literal: a literal with a getter
 * is built slowly at every term.
 */
class TermRenewal implements RenewalMember {
  readonly request: RenewalMember['request']
  readonly renewed: RenewalMember['renewed']
  readonly lost: RenewalMember['lost']
  readonly failed: RenewalMember['failed']
  readonly #state: TermState

  constructor(state: TermState, how: Omit<RenewalMember, 'ended'>) {
    this.#state = state
    this.request = how.request
    this.renewed = how.renewed
    this.lost = how.lost
    this.failed = how.failed
  }

  /**
   * Reads the clock: a term past its deadline (a stalled loop) ends now, before a renewal could
   * be sent for it.
   */
  get ended(): boolean {
    return !this.#state.isActive()
  }
}

/**
 * The reason of an ended term's signal. Made without stack frames: they would only show this
 * file's end() (never the caller's code), and capturing them is most of what ending costs.
 */
function endedError(resource: string, token: number, reason: TermEndReason): LeadershipLostError {
  const limit = Error.stackTraceLimit
  Error.stackTraceLimit = 0
  try {
    return new LeadershipLostError(resource, token, reason)
  } finally {
    Error.stackTraceLimit = limit
  }
}

/**
 * One interval shared by every campaign of the process, ref'd while any campaign runs: what
 * keeps the process up while someone awaits a campaign (a ref/unref per campaign, not a timer).
 */
let keepAlive: ReturnType<typeof setInterval> | undefined
let campaigning = 0

function holdProcess(): void {
  keepAlive ??= setInterval(() => {}, 2 ** 30)
  if (campaigning++ === 0) keepAlive.ref()
}

function releaseProcess(): void {
  if (--campaigning === 0) keepAlive?.unref()
}

/** Waits `ms`, or until `setWake`'s function is called, or rejects when `signal` aborts. */
function waitForWake(
  clock: Clock,
  ms: number,
  signal: Stop | AbortSignal,
  setWake: (fn: (() => void) | undefined) => void,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason as Error)
    const done = () => {
      if (timer !== undefined) clock.clearTimeout(timer)
      off()
      setWake(undefined)
      resolve()
    }
    // Infinity: no timer at all (a waiter whose turn is not next waits to be woken).
    const timer = Number.isFinite(ms) ? clock.setTimeout(done, ms) : undefined
    const off = onAbort(signal, () => {
      if (timer !== undefined) clock.clearTimeout(timer)
      setWake(undefined)
      reject(signal.reason as Error)
    })
    setWake(done)
  })
}

/** Rejects as soon as `signal` aborts, even while `promise` is still settling in the background. */
function raceAbort<T>(promise: Promise<T>, signal: Stop, orphan: (value: T) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false
    const stopped = () => {
      settled = true
      // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- the stop's reason, as an AbortSignal's
      reject(signal.reason)
    }
    const off = signal.aborted ? (stopped(), noop) : signal.onAbort(stopped)
    promise.then(
      (value) => {
        off()
        if (settled) orphan(value)
        else resolve(value)
      },
      (error: unknown) => {
        off()
        // Passed on as it came: the loop's own errors and the signal's reason.
        // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
        reject(error)
      },
    )
  })
}

function noop(): void {}
