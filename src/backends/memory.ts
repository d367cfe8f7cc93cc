/**
 * The reference backend: grants in a Map, expiry on an injectable clock, watchers notified
 * asynchronously (as a real backend would). One process only; the cluster backend shares it
 * across node:cluster workers. Waiters stand in a line per resource (first come, first served):
 * a Map from candidate to its place, in the order the places were taken.
 *
 * A release hands the tickets it frees to the first places in line itself (the graceful handoff
 * in one push, not a wake-up and an ask): each place remembers the session (a process: a
 * `handle()`, a hub connection's `session()`, or the store itself) whose ask took it, and is
 * granted only while that session watches the resource, for what is left of the place's life,
 * and the change names the grant (`granted`) only to that session's watchers.
 */
import type {
  AcquireRequest,
  AcquireResult,
  Backend,
  Holder,
  Json,
  ReleaseRequest,
  RenewRequest,
  StoredRecord,
  Unwatch,
  Waiter,
  WatchChange,
  EndedGrant,
  WriteRecordRequest,
  WriteRecordResult,
} from '../backend.js'
import {
  validateAcquire,
  validateRecordKey,
  validateRelease,
  validateRenew,
  validateResource,
  validateToken,
  validateWriteRecord,
} from '../validate.js'
import { type Clock, systemClock } from '../clock.js'
import { TicketsMismatchError } from '../errors.js'
import { CloseGate } from './kit.js'

/** Options of `memoryBackend()`. */
export interface MemoryBackendOptions {
  /** The backend's own clock: expiry is measured on it. */
  clock?: Clock
  /**
   * Every resource's tokens start above this (default 0): a store that replaces another (the
   * `local` backend's next hub) keeps its tokens above every token the old one gave.
   */
  tokenFloor?: number
  /** The backend's wall clock (`now()`, ms since the epoch). Default `Date.now`. */
  wallClock?: () => number
  /**
   * Whether a release may hand its freed tickets to the waiters in line now (default: always).
   * The `local` hub says no within its post-crash grace and once it has handed its grants over.
   */
  handoff?: () => boolean
}

/**
 * One process's view of the store (see `MemoryBackend.session`): its asks take places that a
 * release may grant while its watches listen, and only its watchers hear of those grants.
 */
export interface MemorySession {
  /** Backend.acquire, the place it takes (if refused) owned by this session. */
  acquire(request: AcquireRequest): Promise<AcquireResult>
  /** Backend.watch, through this session: while one lasts, its places take handoffs. */
  watch(resource: string, onChange: (change?: WatchChange) => void): Promise<Unwatch>
  /** The process is gone: its watches stop, and no place of it takes a handoff any more. */
  end(): void
}

/** A grant as it moves from one store to the next (a `local` hub handing over). */
export interface GrantRecord {
  resource: string
  candidate: string
  token: number
  tickets: number
  /** What is left of the grant's lease, ms. */
  remainingMs: number
  metadata: Json
}

interface Grant {
  token: number
  expiresAt: number
  metadata: Json
}

/** Whose asks and watches these are: one per process (handle, hub connection, the store). */
interface Session {
  ended: boolean
}

/** A waiter's place in line: what a release that grants it needs. */
interface Place {
  expiresAt: number
  /** The tickets and metadata of the ask that took (or last kept by asking) the place. */
  tickets: number
  metadata: Json
  /** The session of that ask: only it is told of a grant made for the place. */
  session: Session
}

interface Watcher {
  fn: (change: WatchChange) => void
  session: Session
}

/** A grant a release made for a place in line (see #handOff). */
interface Handed {
  candidate: string
  token: number
  session: Session
}

interface ResourceState {
  grants: Map<string, Grant>
  /** The line of waiters: candidate to its place, in the order places were taken. */
  line: Map<string, Place>
  lastToken: number
  /**
   * The tickets the live grants were made with (meaningless while there are none); also the
   * last asker's, which a queued renewal (it carries none) is judged by.
   */
  tickets: number
}

/** The reference backend: grants in this process's memory, on an injectable clock. */
export class MemoryBackend implements Backend {
  readonly name: string = 'memory'
  readonly #clock: Clock
  readonly #resources = new Map<string, ResourceState>()
  readonly #watchers = new Map<string, Set<Watcher>>()
  /** The session of calls made on the store itself (one process: its own elections). */
  readonly #own: Session = { ended: false }
  readonly #handoff: () => boolean
  readonly #gate = new CloseGate('memory')
  readonly #records = new Map<string, StoredRecord>()
  readonly #wallClock: () => number
  readonly #tokenFloor: number

  constructor(options: MemoryBackendOptions = {}) {
    this.#clock = options.clock ?? systemClock
    this.#wallClock = options.wallClock ?? Date.now
    this.#tokenFloor = options.tokenFloor ?? 0
    this.#handoff = options.handoff ?? (() => true)
  }

  /**
   * A new session on this store, for one process served through it (a hub connection): asks
   * and watches made through it are that process's, so a release grants its places only while
   * it listens and names those grants only to it. `end()` it when the process goes.
   */
  session(): MemorySession {
    const session: Session = { ended: false }
    const unwatches = new Set<Unwatch>()
    return {
      acquire: (request) => this.#acquire(request, session),
      watch: async (resource, onChange) => {
        const unwatch = await this.#watch(resource, onChange, session)
        const once: Unwatch = async () => {
          if (unwatches.delete(once)) await unwatch()
        }
        unwatches.add(once)
        if (session.ended) await once()
        return once
      },
      end: () => {
        session.ended = true
        for (const unwatch of [...unwatches]) void unwatch()
      },
    }
  }

  /**
   * Installs a grant another store made (same token, what is left of its lease), so its holder
   * keeps its term across a change of store. Refused (false) when it would break a rule: the
   * resource has other tickets, its tickets are taken, the candidate holds another token, or
   * the token is above `tokenFloor` (this store's own range). Later grants get larger tokens.
   */
  adopt(grant: GrantRecord): boolean {
    this.#checkOpen()
    validateAcquire({ ...grant, leaseMs: Math.max(10, grant.remainingMs) })
    validateToken(grant.token)
    const now = this.#clock.now()
    const state = this.#state(grant.resource)
    if (this.#prune(state, now)) this.#notify(grant.resource)
    const mine = state.grants.get(grant.candidate)
    if (mine) {
      if (mine.token !== grant.token) return false
      mine.expiresAt = Math.max(mine.expiresAt, now + grant.remainingMs)
      return true
    }
    if (state.grants.size > 0 && state.tickets !== grant.tickets) return false
    if (state.grants.size >= grant.tickets) return false
    // Only an older store's tokens (all at or below the floor): this store gives those above.
    if (grant.token > this.#tokenFloor) return false
    state.tickets = grant.tickets
    state.grants.set(grant.candidate, {
      token: grant.token,
      expiresAt: now + grant.remainingMs,
      metadata: grant.metadata,
    })
    state.line.delete(grant.candidate)
    this.#notify(grant.resource)
    return true
  }

  /** Every live grant, for the next store (a `local` hub closing cleanly). */
  snapshot(): GrantRecord[] {
    const now = this.#clock.now()
    const out: GrantRecord[] = []
    for (const [resource, state] of this.#resources) {
      for (const [candidate, g] of state.grants) {
        if (g.expiresAt <= now) continue
        out.push({
          resource,
          candidate,
          token: g.token,
          tickets: state.tickets,
          // Whole ms (a lease is), rounded up: the next store must not end it before its holder.
          remainingMs: Math.ceil(g.expiresAt - now),
          metadata: g.metadata,
        })
      }
    }
    return out
  }

  /**
   * The candidates waiting in the resource's line, first first (live places only, read on
   * the backend's clock without pruning): for tests and diagnostics.
   */
  lineOf(resource: string): string[] {
    return this.#livePlaces(resource).map(([candidate]) => candidate)
  }

  /** Backend.waiters: the live places in line, first first, with what is left of each. */
  async waiters(resource: string): Promise<Waiter[]> {
    this.#checkOpen()
    validateResource(resource)
    const now = this.#clock.now()
    return this.#livePlaces(resource).map(([candidate, expiresAt]) => ({
      candidate,
      remainingMs: expiresAt - now,
    }))
  }

  #livePlaces(resource: string): [string, number][] {
    const now = this.#clock.now()
    const line = this.#resources.get(resource)?.line ?? new Map<string, Place>()
    return [...line]
      .map(([candidate, place]): [string, number] => [candidate, place.expiresAt])
      .filter(([, expiresAt]) => expiresAt > now)
  }

  acquire(request: AcquireRequest): Promise<AcquireResult> {
    return this.#acquire(request, this.#own)
  }

  async #acquire(request: AcquireRequest, session: Session): Promise<AcquireResult> {
    this.#checkOpen()
    validateAcquire(request)
    const now = this.#clock.now()
    const state = this.#state(request.resource)
    let changed = this.#prune(state, now)
    if (state.grants.size > 0 && state.tickets !== request.tickets) {
      if (changed) this.#notify(request.resource)
      throw new TicketsMismatchError(request.resource, request.tickets, state.tickets)
    }
    state.tickets = request.tickets
    const mine = state.grants.get(request.candidate)
    // Live places before the asker's (all of them when it has none): the line is pruned.
    const ahead = this.#ahead(state, request.candidate)
    let result: AcquireResult
    if (mine) {
      mine.expiresAt = now + request.leaseMs
      changed ||= JSON.stringify(mine.metadata) !== JSON.stringify(request.metadata)
      mine.metadata = request.metadata
      result = { acquired: true, token: mine.token, holders: this.#list(state, now) }
    } else if (state.grants.size + ahead < request.tickets) {
      const token = ++state.lastToken
      state.grants.set(request.candidate, {
        token,
        expiresAt: now + request.leaseMs,
        metadata: request.metadata,
      })
      state.line.delete(request.candidate)
      changed = true
      result = { acquired: true, token, holders: this.#list(state, now) }
    } else {
      // Take a place at the end, or keep the one it has (a Map keeps a key's order on set),
      // now this ask's: a grant a release makes for it lasts at least this ask's lease.
      // Joining the line frees no ticket: it publishes nothing.
      state.line.set(request.candidate, {
        expiresAt: now + request.leaseMs,
        tickets: request.tickets,
        metadata: request.metadata,
        session,
      })
      const holders = this.#list(state, now)
      // When a ticket could next free up for it: a grant's expiry, or a place ahead's.
      const places = [...state.line.values()].slice(0, ahead).map((p) => p.expiresAt - now)
      result = {
        acquired: false,
        holders,
        retryInMs: Math.max(0, Math.min(...holders.map((h) => h.remainingMs), ...places)),
        ahead,
      }
    }
    if (changed) this.#notify(request.resource)
    return result
  }

  async renew(requests: RenewRequest[]): Promise<boolean[]> {
    this.#checkOpen()
    requests.forEach(validateRenew)
    const now = this.#clock.now()
    return requests.map((request) => {
      const state = this.#resources.get(request.resource)
      if (!state) return false
      if (this.#prune(state, now)) this.#notify(request.resource)
      if (request.queued) {
        const place = state.line.get(request.candidate)
        if (!place) return false
        // Kept (and refreshed) either way: `false` asks it to claim the ticket free for it now.
        // Never shortened: a grant made for the place lasts at least its last ask's lease.
        const free = state.grants.size + this.#ahead(state, request.candidate) < state.tickets
        place.expiresAt = Math.max(place.expiresAt, now + request.leaseMs)
        return !free
      }
      const grant = state.grants.get(request.candidate)
      if (!grant || grant.token !== request.token) return false
      grant.expiresAt = now + request.leaseMs
      return true
    })
  }

  async release(request: ReleaseRequest): Promise<void> {
    this.#checkOpen()
    validateRelease(request)
    const state = this.#resources.get(request.resource)
    if (!state) return
    // Expired places stand nowhere: none of them is handed a ticket below.
    const pruned = this.#prune(state, this.#clock.now())
    // Without a token the candidate withdraws: its place in line goes too.
    let changed = request.token === undefined && state.line.delete(request.candidate)
    const grant = state.grants.get(request.candidate)
    const ended: EndedGrant[] = []
    if (grant && (request.token === undefined || grant.token === request.token)) {
      state.grants.delete(request.candidate)
      ended.push({ candidate: request.candidate, token: grant.token })
      changed = true
    }
    const handed = changed ? this.#handOff(request.resource, state) : []
    if (changed || pruned) this.#notify(request.resource, ended, handed)
  }

  /**
   * Grants the tickets now free to the first places in line, in order, each with a token above
   * every earlier one, for what is left of the place's life (at least one lease from its last
   * ask, so the waiter may count its term from that ask's send time, and a waiter gone since
   * never holds longer than its place would have stood). Stops at the first place whose session
   * does not listen for the resource (ended, or no watch: it asks for itself when woken) or
   * that asked with other tickets: never overtaken.
   */
  #handOff(resource: string, state: ResourceState): Handed[] {
    const handed: Handed[] = []
    if (state.line.size === 0 || !this.#handoff()) return handed
    const watchers = [...(this.#watchers.get(resource) ?? [])]
    for (const [candidate, place] of state.line) {
      if (state.grants.size >= state.tickets) break
      if (place.tickets !== state.tickets || place.session.ended) break
      if (!watchers.some((w) => w.session === place.session)) break
      if (state.grants.has(candidate)) break // a holder stands in no line; never two grants
      const token = ++state.lastToken
      state.grants.set(candidate, { token, expiresAt: place.expiresAt, metadata: place.metadata })
      state.line.delete(candidate)
      handed.push({ candidate, token, session: place.session })
    }
    return handed
  }

  async holders(resource: string): Promise<Holder[]> {
    this.#checkOpen()
    validateResource(resource)
    const state = this.#resources.get(resource)
    if (!state) return []
    const now = this.#clock.now()
    if (this.#prune(state, now)) this.#notify(resource)
    return this.#list(state, now)
  }

  watch(resource: string, onChange: (change?: WatchChange) => void): Promise<Unwatch> {
    return this.#watch(resource, onChange, this.#own)
  }

  async #watch(
    resource: string,
    onChange: (change?: WatchChange) => void,
    session: Session,
  ): Promise<Unwatch> {
    this.#checkOpen()
    validateResource(resource)
    let set = this.#watchers.get(resource)
    if (!set) this.#watchers.set(resource, (set = new Set()))
    // An entry per call, so the same function can be watched twice and unwatched once.
    const entry: Watcher = { fn: (change) => onChange(change), session }
    set.add(entry)
    return async () => {
      set.delete(entry)
      if (set.size === 0 && this.#watchers.get(resource) === set) this.#watchers.delete(resource)
    }
  }

  onClose(hook: () => Promise<void>): () => void {
    return this.#gate.onClose(hook)
  }

  async readRecord(resource: string, key: string): Promise<StoredRecord | undefined> {
    this.#checkOpen()
    validateResource(resource)
    validateRecordKey(key)
    const stored = this.#records.get(`${resource}\n${key}`)
    return stored && structuredClone(stored)
  }

  async writeRecord(request: WriteRecordRequest): Promise<WriteRecordResult> {
    this.#checkOpen()
    validateWriteRecord(request)
    const id = `${request.resource}\n${request.key}`
    const stored = this.#records.get(id)
    if ((stored?.version ?? 0) !== request.version || (stored && request.token < stored.token))
      return { written: false, current: stored && structuredClone(stored) }
    const version = request.version + 1
    this.#records.set(id, { value: structuredClone(request.value), token: request.token, version })
    return { written: true, version }
  }

  async now(): Promise<number> {
    this.#checkOpen()
    return this.#wallClock()
  }

  close(): Promise<void> {
    return this.#gate.close(async () => this.#watchers.clear())
  }

  /**
   * Another handle on this same store (as another process would hold a server): its close()
   * drops only the watches made through it and leaves the store running.
   */
  handle(name = this.name): Backend {
    const store = this as MemoryBackend
    // Its own session: its places take a handoff only while it watches, and it alone hears of it.
    const session = this.session()
    const unwatches = new Set<Unwatch>()
    const gate = new CloseGate(name)
    const check = () => gate.check()
    const teardown = async () => {
      session.end()
      await Promise.all([...unwatches].map((u) => u()))
    }
    // Closing the store closes its handles first, so their elections end 'closed' too.
    const offStore = this.#gate.onClose(() => gate.close(teardown))
    return {
      name,
      acquire: async (request) => (check(), session.acquire(request)),
      renew: async (requests) => (check(), store.renew(requests)),
      release: async (request) => (check(), store.release(request)),
      holders: async (resource) => (check(), store.holders(resource)),
      readRecord: async (resource, key) => (check(), store.readRecord(resource, key)),
      writeRecord: async (request) => (check(), store.writeRecord(request)),
      now: async () => (check(), store.now()),
      async watch(resource, onChange) {
        check()
        const unwatch = await session.watch(resource, onChange)
        const once: Unwatch = async () => {
          if (unwatches.delete(once)) await unwatch()
        }
        unwatches.add(once)
        return once
      },
      onClose: (hook) => gate.onClose(hook),
      close: () => {
        offStore()
        return gate.close(teardown)
      },
    }
  }

  #checkOpen(): void {
    this.#gate.check()
  }

  #state(resource: string): ResourceState {
    let state = this.#resources.get(resource)
    if (!state)
      this.#resources.set(
        resource,
        (state = {
          grants: new Map(),
          line: new Map(),
          lastToken: this.#tokenFloor,
          tickets: 0,
        }),
      )
    return state
  }

  /**
   * Drops expired grants and places; true when any was dropped (a ticket may be free, or the
   * line moved up). The state (and its lastToken) stays.
   */
  #prune(state: ResourceState, now: number): boolean {
    let dropped = false
    for (const [candidate, grant] of state.grants) {
      if (grant.expiresAt <= now) {
        state.grants.delete(candidate)
        dropped = true
      }
    }
    for (const [candidate, place] of state.line) {
      if (place.expiresAt <= now) {
        state.line.delete(candidate)
        dropped = true
      }
    }
    return dropped
  }

  /** Places before the candidate's in the (pruned) line; all of them when it has none. */
  #ahead(state: ResourceState, candidate: string): number {
    let i = 0
    for (const waiter of state.line.keys()) {
      if (waiter === candidate) return i
      i++
    }
    return i
  }

  #list(state: ResourceState, now: number): Holder[] {
    return [...state.grants]
      .map(([candidate, g]) => ({
        candidate,
        token: g.token,
        metadata: g.metadata,
        remainingMs: Math.max(0, g.expiresAt - now),
      }))
      .sort((a, b) => a.token - b.token)
  }

  /**
   * Tells the resource's watchers; `wake` names the waiters a free ticket now goes to (those
   * handed one first), `ended` the grants a release removed (an expiry names none: its holder's
   * deadline came first), `granted` the grants handed to places, to their session's watchers only.
   */
  #notify(resource: string, ended: readonly EndedGrant[] = [], handed: Handed[] = []): void {
    const set = this.#watchers.get(resource)
    if (!set) return
    const state = this.#resources.get(resource)
    const free = state ? Math.max(0, state.tickets - state.grants.size) : 0
    const wake = [
      ...handed.map((h) => h.candidate),
      ...(state ? [...state.line.keys()].slice(0, free) : []),
    ]
    for (const { fn, session } of [...set]) {
      const granted = handed
        .filter((h) => h.session === session)
        .map((h) => ({ candidate: h.candidate, token: h.token }))
      queueMicrotask(() => {
        try {
          const change: WatchChange = { wake: [...wake], ended: ended.map((g) => ({ ...g })) }
          if (granted.length) change.granted = granted
          fn(change)
        } catch {
          // A watcher's own failure is its business; the backend keeps serving others.
        }
      })
    }
  }
}

/** A backend for the elections of one process (tests, or one process's workers of its own). */
export function memoryBackend(options?: MemoryBackendOptions): MemoryBackend {
  return new MemoryBackend(options)
}
