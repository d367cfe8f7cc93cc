/**
 * Push for the etcd backend: ONE etcd watch per backend, on its whole prefix, whatever the number
 * of resources watched (etcd3 attaches a client's watches one at a time and looks each event's
 * watcher up in a list, so 10,000 watches took minutes). The events of the resources watched
 * here keep a copy of each one's line (its keys by create revision, values decoded), started
 * from a consistent read (or an acquire's transaction, which read the range at its revision) and
 * moved on by every event after that revision, so the copy is the line as etcd had it at the
 * last revision the watch delivered. From it each change says whom it concerns:
 * - `wake`: the waiting keys that rank within the tickets after the change (a ticket is free for
 *   each: its candidate is granted when it asks again), told whenever that list gains a key;
 * - a new queued key, or a queued key's new metadata, changes no holder: nobody is told;
 * - `ended`: the grants whose keys went (their holders step down on it, before a waiter is
 *   granted: that takes the waiter another round trip);
 * - `granted`: waiting keys of this backend's own places that another process's release granted
 *   in its delete's transaction (see the backend's release), named to this backend only, and
 *   woken (`wake`) along with the free places;
 * - a grant (a key created granted, or a waiting key's own acquire dropping its flag), a grant's
 *   key going, a queued key going, a holder's new metadata: watchers are told.
 * After a reconnect (etcd3 resumes the watch where it was, so the copy stays exact) and after
 * etcd cancelled the watch (compaction: copies are read again), every watcher is nudged with no
 * change. The backend also answers from the copy (see `view`) while the watch is connected.
 */
import type { IEvent, IKeyValue, Namespace, Watcher } from 'etcd3'
import type { EndedGrant, WatchChange } from '../../backend.js'
import { BackendError } from '../../errors.js'
import { backendError, timeoutError, unwatchOnce, withDeadline } from '../kit.js'
import { type Decoded, decodeValue, keyString, rankDecoded } from './layout.js'

/** A watcher's callback (Backend.watch's onChange). */
type Listener = (change?: WatchChange) => void

/** One key of a resource's line, as the watch last saw it. */
export interface LineKey {
  /** The full key (with the client's namespace), as the backend's layout spells it. */
  readonly key: string
  kv: IKeyValue
  stored: Decoded
}

/** A consistent read of a resource's keys: oldest create revision first, at `revision`. */
export interface Snapshot {
  kvs: IKeyValue[]
  revision: number
}

interface Tracked {
  readonly resource: string
  readonly listeners: Set<Listener>
  /** The line, oldest create revision first (once loaded). */
  keys: LineKey[]
  /** Events that came while the first read was out: applied over it when newer. */
  pending: IEvent[] | undefined
  /** The read's revision: only later events apply. */
  base: number
  ready: Promise<void>
  /** Last time a listener left or the copy was offered (copies nobody watches are dropped). */
  lastUsed: number
}

interface Stream {
  readonly watcher: Watcher
  readonly ready: Promise<void>
  connected: boolean
  broken: boolean
  /** Every event after this revision has reached us or will (set when etcd created the watch). */
  since: number
}

/** An event of a resource nobody tracks, kept a moment for a copy offered just after it. */
interface Recent {
  readonly resource: string
  readonly event: IEvent
  readonly revision: number
  readonly at: number
}

/** How long copies nobody watches, and events of untracked resources, are kept. */
const KEEP_MS = 5_000
/** The prefix watch is cancelled after this long with nothing tracked. */
const IDLE_MS = 10_000

const now = () => performance.now()

/** The etcd watch of one backend and the resources it keeps a copy of. */
export class Watches {
  readonly #client: Namespace
  readonly #timeoutMs: number
  readonly #namespace: string
  readonly #base: string
  readonly #tracked = new Map<string, Tracked>()
  #stream: Stream | undefined
  /** Recent events of untracked resources, oldest first, and the same by resource. */
  #recent: Recent[] = []
  readonly #recentOf = new Map<string, Recent[]>()
  /** Events after this revision are all in #recent or still to come (for offered copies). */
  #recentSince = Number.POSITIVE_INFINITY
  #sweeper: NodeJS.Timeout | undefined
  #idleSince = now()
  readonly #retries = new Set<NodeJS.Timeout>()
  readonly #cancelling = new Set<Promise<void>>()
  #closed = false

  /**
   * @param namespace the client's namespace (latin1): watch events come without it
   * @param prefix the backend's prefix (without the namespace)
   * @param read a consistent read of one resource's keys, oldest create revision first
   * @param label `etcd at <endpoints>`, for messages
   * @param handed whether a waiting key that became a grant (full key, token, lease id) is one of
   *   this backend's places, whose candidate may take the grant (WatchChange.granted)
   */
  constructor(
    client: Namespace,
    timeoutMs: number,
    namespace: string,
    readonly prefix: string,
    readonly read: (resource: string) => Promise<Snapshot>,
    readonly label: string,
    readonly handed: (key: string, token: number, lease: string) => boolean = () => false,
  ) {
    this.#client = client
    this.#timeoutMs = timeoutMs
    this.#namespace = namespace
    this.#base = namespace + prefix
  }

  /** Resolves once the watch is in place and the line read, so no change after it is missed. */
  async watch(resource: string, onChange: Listener): Promise<() => Promise<void>> {
    if (this.#closed) throw new BackendError(`${this.label}: the watches are closed`)
    const tracked = this.#tracked.get(resource) ?? this.#track(resource)
    // A wrapper per call, so the same function can be watched twice and unwatched once.
    const listener: Listener = (change) => onChange(change)
    tracked.listeners.add(listener)
    try {
      await tracked.ready
    } catch (error) {
      tracked.listeners.delete(listener)
      throw error
    }
    return unwatchOnce(() => {
      // The copy lives on a moment (the next ask of the same resource finds it).
      const current = this.#tracked.get(resource)
      tracked.listeners.delete(listener)
      current?.listeners.delete(listener)
      if (current) current.lastUsed = now()
    })
  }

  /**
   * The line of `resource` as the watch last saw it, while the watch is connected and the copy
   * loaded; undefined otherwise (then ask etcd).
   */
  view(resource: string): readonly LineKey[] | undefined {
    const stream = this.#stream
    if (!stream || !stream.connected || stream.broken) return undefined
    const tracked = this.#tracked.get(resource)
    if (!tracked || tracked.pending) return undefined
    return tracked.keys
  }

  /** Whether anyone watches `resource` here (its places are then marked `watched`). */
  listened(resource: string): boolean {
    return (this.#tracked.get(resource)?.listeners.size ?? 0) > 0
  }

  /**
   * Opens the watch if there is none, without waiting: an acquire calls it before its
   * transaction, so the watch most likely starts before the transaction's revision and can take
   * its read as a copy (`offer` refuses a read older than the watch).
   */
  prepare(): void {
    if (!this.#closed && !this.#stream) this.#open()
  }

  /**
   * A consistent read of `resource` (an acquire's transaction): kept as its copy when the watch
   * delivers every event after its revision (so a `watch()` soon after needs no read of its
   * own). Also starts the watch, for the next ones.
   */
  offer(resource: string, snapshot: Snapshot): void {
    if (this.#closed) return
    const stream = this.#stream ?? this.#open()
    const existing = this.#tracked.get(resource)
    if (existing) {
      existing.lastUsed = now()
      return
    }
    if (!stream.connected || stream.broken || snapshot.revision < this.#recentSince) return
    const tracked = this.#newTracked(resource, Promise.resolve())
    this.#load(
      tracked,
      snapshot,
      (this.#recentOf.get(resource) ?? []).map((r) => r.event),
    )
    this.#recentOf.delete(resource)
  }

  /** Cancels the watch (bounded by the timeout: a dead connection does not hold close() up). */
  async close(): Promise<void> {
    this.#closed = true
    clearInterval(this.#sweeper)
    for (const timer of this.#retries) clearTimeout(timer)
    this.#retries.clear()
    this.#tracked.clear()
    const stream = this.#stream
    this.#stream = undefined
    if (stream) this.#cancel(stream)
    await Promise.all(this.#cancelling)
  }

  // ------------------------------------------------------------------------------------------

  #newTracked(resource: string, ready: Promise<void>): Tracked {
    const tracked: Tracked = {
      resource,
      listeners: new Set(),
      keys: [],
      pending: [],
      base: 0,
      ready,
      lastUsed: now(),
    }
    this.#tracked.set(resource, tracked)
    this.#sweep()
    return tracked
  }

  /** Starts a copy of `resource`: the watch first, then a read at a revision it covers. */
  #track(resource: string): Tracked {
    const tracked = this.#newTracked(resource, Promise.resolve())
    const stream = this.#stream ?? this.#open()
    tracked.ready = (async () => {
      await stream.ready
      const snapshot = await this.read(resource)
      if (this.#tracked.get(resource) === tracked) this.#load(tracked, snapshot, [])
    })()
    tracked.ready.catch(() => {
      if (this.#tracked.get(resource) === tracked) this.#tracked.delete(resource)
    })
    return tracked
  }

  /** The copy from `snapshot`, then the events that came meanwhile (newer ones only). */
  #load(tracked: Tracked, snapshot: Snapshot, more: IEvent[]): void {
    tracked.keys = snapshot.kvs.map((kv) => ({
      key: keyString(kv.key),
      kv,
      stored: decodeValue(kv.value),
    }))
    tracked.base = snapshot.revision
    const pending = [...more, ...(tracked.pending ?? [])]
    tracked.pending = undefined
    for (const event of pending) {
      if (Number(event.kv.mod_revision) > tracked.base) this.#apply(tracked, event)
    }
  }

  #open(): Stream {
    const watcher = this.#client.watch().prefix(this.prefix).watcher()
    let settled = false
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(
          new BackendError(
            `${this.label}: watch of "${this.prefix}" not established in ${this.#timeoutMs} ms`,
          ),
        )
        this.#broken(stream)
      }, this.#timeoutMs)
      timer.unref()
      watcher.on('connected', (response: { header: { revision: string } }) => {
        clearTimeout(timer)
        stream.connected = true
        if (!settled) {
          settled = true
          stream.since = Number(response.header.revision)
          if (this.#stream === stream) this.#recentSince = stream.since
          resolve()
        } else {
          // etcd3 resumed from the last revision seen, so the copies are still exact; a waiter
          // that missed nothing asks again anyway (the contract's "reconnect: unknown").
          this.#nudgeAll()
        }
      })
      watcher.on('disconnected', () => {
        stream.connected = false
      })
      watcher.on('error', (error: Error) => {
        clearTimeout(timer)
        reject(backendError(this.label, `watch of "${this.prefix}"`, error))
        this.#broken(stream)
      })
    })
    // Nobody may be awaiting `ready` when it fails late; the rejection is still observed here.
    ready.catch(() => {})
    watcher.on('data', (response: { events: IEvent[] }) => {
      if (this.#stream === stream && !stream.broken) this.#events(response.events)
    })
    const stream: Stream = { watcher, ready, connected: false, broken: false, since: Infinity }
    this.#stream = stream
    this.#recent = []
    this.#recentOf.clear()
    this.#recentSince = Number.POSITIVE_INFINITY
    this.#idleSince = now()
    this.#sweep()
    return stream
  }

  /** etcd cancelled the watch (or it never came): read every copy again on a new one, nudge. */
  #broken(stream: Stream): void {
    if (stream.broken) return
    stream.broken = true
    stream.connected = false
    this.#cancel(stream)
    if (this.#stream !== stream) return
    this.#stream = undefined
    const watched = [...this.#tracked.values()].filter((t) => t.listeners.size > 0)
    this.#tracked.clear()
    if (this.#closed || watched.length === 0) return
    const timer = setTimeout(() => {
      this.#retries.delete(timer)
      if (this.#closed) return
      for (const old of watched) {
        if (old.listeners.size === 0) continue
        const fresh = this.#tracked.get(old.resource) ?? this.#track(old.resource)
        for (const listener of old.listeners) fresh.listeners.add(listener)
        fresh.ready.then(
          () => this.#nudge(fresh),
          () => this.#nudgeLater(fresh),
        )
      }
    }, 100)
    timer.unref()
    this.#retries.add(timer)
    for (const old of watched) this.#nudge(old)
  }

  /** A copy whose read failed after a broken watch: its watchers ask again, and it is retried. */
  #nudgeLater(tracked: Tracked): void {
    this.#nudge(tracked)
    if (this.#closed || tracked.listeners.size === 0) return
    const timer = setTimeout(() => {
      this.#retries.delete(timer)
      if (this.#closed || tracked.listeners.size === 0) return
      const fresh = this.#tracked.get(tracked.resource) ?? this.#track(tracked.resource)
      for (const listener of tracked.listeners) fresh.listeners.add(listener)
      fresh.ready.then(
        () => this.#nudge(fresh),
        () => this.#nudgeLater(fresh),
      )
    }, 1_000)
    timer.unref()
    this.#retries.add(timer)
  }

  /** One watch response: events in revision order, changes worked out per revision. */
  #events(events: IEvent[]): void {
    let revision = -1
    const touched = new Map<Tracked, Before>()
    const flush = () => {
      for (const [tracked, before] of touched) this.#changed(tracked, before)
      touched.clear()
    }
    for (const event of events) {
      const eventRevision = Number(event.kv.mod_revision)
      if (eventRevision !== revision) {
        flush()
        revision = eventRevision
      }
      const key = this.#namespace + keyString(event.kv.key)
      const resource = this.#resourceOf(key)
      if (resource === undefined) continue
      const tracked = this.#tracked.get(resource)
      if (!tracked) {
        this.#remember(resource, event, eventRevision)
        continue
      }
      if (tracked.pending) {
        tracked.pending.push(event)
        continue
      }
      if (eventRevision <= tracked.base) continue
      // A copy nobody watches (kept a moment for the next ask) has nobody to tell: moved on
      // alone, without ranking the line before and after (10,000 releases at once). Kept even
      // when empty, for the sweeper to drop: dropped now, a read from before this event could
      // be offered next and bring back keys this event deleted.
      if (tracked.listeners.size === 0 && !touched.has(tracked)) {
        this.#apply(tracked, event)
        continue
      }
      if (!touched.has(tracked)) touched.set(tracked, { ...lineOf(tracked.keys), withdrawn: false })
      const was = tracked.keys.find((k) => k.key === key)
      const grant = was !== undefined && touched.get(tracked)!.granted.has(key)
      if (event.type === 'Delete' && was && !grant) touched.get(tracked)!.withdrawn = true
      this.#apply(tracked, event)
    }
    flush()
    this.#prune()
  }

  /** Moves a copy on by one event. */
  #apply(tracked: Tracked, event: IEvent): void {
    const key = this.#namespace + keyString(event.kv.key)
    const index = tracked.keys.findIndex((k) => k.key === key)
    if (event.type === 'Delete') {
      if (index >= 0) tracked.keys.splice(index, 1)
      return
    }
    const kv: IKeyValue = { ...event.kv, key: Buffer.from(key, 'latin1') }
    const entry: LineKey = { key, kv, stored: decodeValue(kv.value) }
    if (index >= 0 && tracked.keys[index]!.kv.create_revision === kv.create_revision) {
      tracked.keys[index] = entry // a new value: the key keeps its place
      return
    }
    if (index >= 0) tracked.keys.splice(index, 1)
    // A new key is normally the newest; keep create-revision order whatever comes.
    const created = Number(kv.create_revision)
    let at = tracked.keys.length
    while (at > 0 && Number(tracked.keys[at - 1]!.kv.create_revision) > created) at--
    tracked.keys.splice(at, 0, entry)
  }

  /** After one revision's events: tell the watchers what it changed, if it changed anything. */
  #changed(tracked: Tracked, was: Before): void {
    const after = lineOf(tracked.keys)
    let changed = was.withdrawn
    for (const [key, value] of after.granted) {
      const old = was.granted.get(key)
      if (old === undefined || !old.equals(value)) changed = true
    }
    for (const key of was.granted.keys()) if (!after.granted.has(key)) changed = true
    for (const key of after.free) if (!was.free.includes(key)) changed = true
    const candidate = (key: string) => key.slice(this.#base.length + tracked.resource.length + 1)
    // A waiting key that is a grant now, under the same token (a release granted it in its own
    // transaction, or its own candidate's ask did): named to the backend whose place it is.
    const granted: { candidate: string; token: number }[] = []
    for (const [key, token] of after.tokens) {
      if (was.waiting.get(key) !== token) continue
      const lease = tracked.keys.find((k) => k.key === key)?.kv.lease
      if (lease !== undefined && this.handed(key, token, String(lease)))
        granted.push({ candidate: candidate(key), token })
    }
    // A grant whose key went, or came back as another key (another create revision): ended.
    // (A key still there under its token is not named, whatever its rank now.)
    const ended: EndedGrant[] = []
    for (const [key, token] of was.tokens) {
      const still = tracked.keys.find((k) => k.key === key)
      if (!still || Number(still.kv.create_revision) !== token)
        ended.push({ candidate: candidate(key), token })
    }
    if (changed) {
      const wake = [...after.free.map(candidate), ...granted.map((g) => g.candidate)]
      this.#notify(tracked, { wake, ended, ...(granted.length ? { granted } : {}) })
    }
  }

  #notify(tracked: Tracked, change: WatchChange | undefined): void {
    for (const listener of [...tracked.listeners]) {
      queueMicrotask(() => {
        try {
          listener(
            change && {
              wake: [...change.wake!],
              ended: change.ended!.map((g) => ({ ...g })),
              ...(change.granted ? { granted: change.granted.map((g) => ({ ...g })) } : {}),
            },
          )
        } catch {
          // The others still hear of the change.
        }
      })
    }
  }

  #nudge(tracked: Tracked): void {
    this.#notify(tracked, undefined)
  }

  #nudgeAll(): void {
    for (const tracked of this.#tracked.values()) this.#nudge(tracked)
  }

  /** The resource of a key under the prefix (`<base><resource>#<candidate>`), if it is one. */
  #resourceOf(key: string): string | undefined {
    if (!key.startsWith(this.#base)) return undefined
    const hash = key.indexOf('#', this.#base.length)
    return hash < 0 ? undefined : key.slice(this.#base.length, hash)
  }

  #remember(resource: string, event: IEvent, revision: number): void {
    const recent: Recent = { resource, event, revision, at: now() }
    this.#recent.push(recent)
    let list = this.#recentOf.get(resource)
    if (!list) this.#recentOf.set(resource, (list = []))
    list.push(recent)
  }

  /** Forgets recent events older than KEEP_MS: a copy offered at an older revision is refused. */
  #prune(): void {
    const old = now() - KEEP_MS
    let drop = 0
    while (drop < this.#recent.length && this.#recent[drop]!.at < old) drop++
    if (drop === 0) return
    for (const recent of this.#recent.slice(0, drop)) {
      this.#recentSince = Math.max(
        this.#recentSince === Infinity ? 0 : this.#recentSince,
        recent.revision,
      )
      const list = this.#recentOf.get(recent.resource)
      if (list?.[0] === recent) list.shift()
      if (list?.length === 0) this.#recentOf.delete(recent.resource)
    }
    this.#recent = this.#recent.slice(drop)
  }

  /** Drops copies nobody watches, and the watch itself once nothing is tracked for a while. */
  #sweep(): void {
    if (this.#sweeper || this.#closed) return
    this.#sweeper = setInterval(() => {
      const old = now() - KEEP_MS
      for (const [resource, tracked] of this.#tracked) {
        if (tracked.listeners.size === 0 && !tracked.pending && tracked.lastUsed < old)
          this.#tracked.delete(resource)
      }
      this.#prune()
      if (this.#tracked.size > 0) this.#idleSince = now()
      else if (now() - this.#idleSince > IDLE_MS && this.#stream) {
        const stream = this.#stream
        this.#stream = undefined
        this.#cancel(stream)
      }
      if (!this.#stream && this.#tracked.size === 0) {
        clearInterval(this.#sweeper)
        this.#sweeper = undefined
      }
    }, 1_000)
    this.#sweeper.unref()
  }

  #cancel(stream: Stream): void {
    // Bounded by the timeout, and quiet: a dead connection must not hold close() up.
    const cancelling = withDeadline(stream.watcher.cancel(), this.#timeoutMs, () =>
      timeoutError(this.label, 'cancelling a watch', this.#timeoutMs),
    ).catch(() => {})
    this.#cancelling.add(cancelling)
    void cancelling.then(() => this.#cancelling.delete(cancelling))
  }
}

/** What a line's watchers care about: its grants (with their values) and its free places. */
interface LineState {
  granted: Map<string, Buffer>
  /** The token (create revision) of each grant. */
  tokens: Map<string, number>
  /** Waiting keys within the tickets: a ticket is free for each. */
  free: string[]
  /** The token of every waiting key, whatever its rank. */
  waiting: Map<string, number>
}

/** A line before a revision's events. */
interface Before extends LineState {
  /** A key that was not a grant went (a withdrawal): the line moved. */
  withdrawn: boolean
}

function lineOf(keys: readonly LineKey[]): LineState {
  const granted = new Map<string, Buffer>()
  const tokens = new Map<string, number>()
  const free: string[] = []
  const waiting = new Map<string, number>()
  const ranked = rankDecoded(keys.map((k) => ({ kv: k, stored: k.stored })))
  for (const k of ranked.keys) {
    if (!k.stored.foreign && k.stored.waiting)
      waiting.set(k.kv.key, Number(k.kv.kv.create_revision))
    if (k.granted) {
      granted.set(k.kv.key, k.kv.kv.value)
      tokens.set(k.kv.key, Number(k.kv.kv.create_revision))
    } else if (k.holder) free.push(k.kv.key)
  }
  return { granted, tokens, free, waiting }
}
