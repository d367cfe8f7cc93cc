/**
 * Push for the etcd backend: one etcd watch per watched resource (on its key range), shared by
 * every watch() of that resource on this backend. etcd3 multiplexes all of a client's watches
 * over one gRPC stream and replays missed events after a reconnect; on top of that, every
 * listener is nudged after a reconnect and after a watch etcd cancelled (e.g. compaction), since
 * a change may have slipped between.
 */
import type { Namespace, Watcher } from 'etcd3'
import { BackendError } from '../../errors.js'
import { backendError, fanOut, timeoutError, unwatchOnce, withDeadline } from '../kit.js'

interface SharedWatch {
  readonly listeners: Set<() => void>
  readonly ready: Promise<void>
  watcher: Watcher
  /** etcd cancelled it: the next watch() of the resource makes a new one. */
  broken: boolean
  cancelling?: Promise<void>
}

/** The etcd watches of one backend, one per watched resource, and the listeners they wake. */
export class Watches {
  readonly #client: Namespace
  readonly #timeoutMs: number
  readonly #watches = new Map<string, SharedWatch>()
  readonly #retries = new Set<NodeJS.Timeout>()
  /** etcd watches being cancelled after their last listener left (close() waits for them). */
  readonly #cancelling = new Set<Promise<void>>()
  #closed = false

  /**
   * @param prefixOf the key prefix of a resource, without the client's namespace
   * @param label `etcd at <endpoints>`, for messages
   */
  constructor(
    client: Namespace,
    timeoutMs: number,
    readonly prefixOf: (resource: string) => string,
    readonly label: string,
  ) {
    this.#client = client
    this.#timeoutMs = timeoutMs
  }

  /** Resolves once etcd confirmed the watch, so a change after that is never missed. */
  async watch(resource: string, onChange: () => void): Promise<() => Promise<void>> {
    let shared = this.#watches.get(resource)
    if (!shared || shared.broken) {
      shared = this.#open(resource)
      this.#watches.set(resource, shared)
    }
    // A wrapper per call, so the same function can be watched twice and unwatched once.
    const listener = () => onChange()
    shared.listeners.add(listener)
    const watch = shared
    try {
      await watch.ready
    } catch (error) {
      this.#drop(resource, watch, listener)
      throw error
    }
    // The listener is gone at once; etcd's cancel goes on in the background, so a candidate
    // that just won does not wait another round trip for it.
    return unwatchOnce(() => this.#drop(resource, watch, listener))
  }

  /** Cancels every watch (bounded by the timeout: a dead connection does not hold close() up). */
  async close(): Promise<void> {
    this.#closed = true
    for (const timer of this.#retries) clearTimeout(timer)
    this.#retries.clear()
    const all = [...this.#watches.values()]
    this.#watches.clear()
    await Promise.all([...all.map((w) => this.#cancel(w)), ...this.#cancelling])
  }

  #open(resource: string): SharedWatch {
    const watcher = this.#client.watch().prefix(this.prefixOf(resource)).watcher()
    const listeners = new Set<() => void>()
    let connected = false
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(
          new BackendError(
            `${this.label}: watch of "${resource}" not established in ${this.#timeoutMs} ms`,
          ),
        )
      }, this.#timeoutMs)
      timer.unref()
      watcher.on('connected', () => {
        clearTimeout(timer)
        if (connected) fanOut(listeners) // a reconnect: something may have changed meanwhile
        connected = true
        resolve()
      })
      watcher.on('error', (error: Error) => {
        clearTimeout(timer)
        shared.broken = true
        reject(backendError(this.label, `watch of "${resource}"`, error))
        if (connected) {
          fanOut(listeners)
          this.#replace(resource, shared)
        }
      })
    })
    // Nobody may be awaiting `ready` when it fails late; the rejection is still observed here.
    ready.catch(() => {})
    watcher.on('data', (response) => {
      if (response.events.length > 0) fanOut(listeners)
    })
    const shared: SharedWatch = { listeners, ready, watcher, broken: false }
    return shared
  }

  /** After etcd cancelled a watch that had listeners: move them to a fresh watch, then nudge. */
  #replace(resource: string, old: SharedWatch): void {
    if (this.#closed || old.listeners.size === 0) return
    const timer = setTimeout(() => {
      this.#retries.delete(timer)
      if (this.#closed || old.listeners.size === 0) return
      let fresh = this.#watches.get(resource)
      if (!fresh || fresh === old || fresh.broken) {
        fresh = this.#open(resource)
        this.#watches.set(resource, fresh)
      }
      for (const listener of old.listeners) fresh.listeners.add(listener)
      const target = fresh
      target.ready.then(
        () => fanOut(target.listeners),
        () => this.#replace(resource, target),
      )
      old.listeners.clear()
    }, 100)
    timer.unref()
    this.#retries.add(timer)
  }

  #drop(resource: string, watch: SharedWatch, listener: () => void): void {
    watch.listeners.delete(listener)
    // A replacement watch may carry this listener now.
    const current = this.#watches.get(resource)
    if (current && current !== watch) current.listeners.delete(listener)
    for (const w of current && current !== watch ? [watch, current] : [watch]) {
      if (w.listeners.size === 0) {
        if (this.#watches.get(resource) === w) this.#watches.delete(resource)
        const cancelling = this.#cancel(w)
        this.#cancelling.add(cancelling)
        void cancelling.then(() => this.#cancelling.delete(cancelling))
      }
    }
  }

  #cancel(watch: SharedWatch): Promise<void> {
    // Bounded by the timeout, and quiet: a dead connection must not hold close() up.
    watch.cancelling ??= withDeadline(watch.watcher.cancel(), this.#timeoutMs, () =>
      timeoutError(this.label, 'cancelling a watch', this.#timeoutMs),
    ).catch(() => {})
    return watch.cancelling
  }
}
