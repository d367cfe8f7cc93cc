/**
 * Push for the PostgreSQL backend: one dedicated connection per backend, shared by all its
 * watches, LISTENs on the schema's channel, whose payload is the resource, or (migration 5's
 * notify_change) `{"resource": ..., "wake": [...]}`: also the waiters the change concerns. A pooled connection
 * cannot carry LISTEN (it goes back to the pool; PgBouncer in transaction mode drops it), hence
 * a client of its own. After a loss it reconnects with backoff and then wakes every watcher (a
 * NOTIFY may have been missed); while it is down, a slow poll wakes them instead.
 */
import type { Client, Notification } from 'pg'
import type { WatchChange } from '../../backend.js'
import { BackendClosedError } from '../../errors.js'
import { backendError, fanOut, timeoutError, withDeadline } from '../kit.js'
import { postgresLabel } from './pool.js'

/** The LISTEN connection of one backend and the watchers it wakes. */
export class Listener {
  readonly #watchers = new Map<string, Set<(change?: PlacedChange) => void>>()
  #client: Client | undefined
  #listening = false
  #connecting: Promise<void> | undefined
  #attempt = 0
  #closed = false
  #reconnectTimer: NodeJS.Timeout | undefined
  #pollTimer: NodeJS.Timeout | undefined
  #heartbeatTimer: NodeJS.Timeout | undefined
  /** Connections made (the first one included): for tests and the benchmark. */
  connects = 0

  constructor(
    private readonly makeClient: () => Promise<Client>,
    /** The server's host:port, for messages. */
    private readonly where: string,
    private readonly channel: string,
    private readonly timeoutMs: number,
    private readonly pollMs: number,
    private readonly heartbeatMs: number,
  ) {}

  /** Whether LISTEN is active now. */
  get listening(): boolean {
    return this.#listening
  }

  /** Whether LISTEN is active now and `resource` has a watcher here (who hears its NOTIFY). */
  hears(resource: string): boolean {
    return this.#listening && this.#watchers.has(resource)
  }

  /** Adds a watcher of `resource`; returns the function that removes it. */
  add(resource: string, fn: (change?: PlacedChange) => void): () => void {
    let set = this.#watchers.get(resource)
    if (!set) this.#watchers.set(resource, (set = new Set()))
    set.add(fn)
    return () => {
      set.delete(fn)
      if (set.size === 0 && this.#watchers.get(resource) === set) this.#watchers.delete(resource)
    }
  }

  /** Resolves once LISTEN is active; starts a connection attempt when none is under way. */
  async ready(): Promise<void> {
    if (this.#closed) throw new BackendClosedError('postgres')
    if (this.#listening) return
    if (this.#reconnectTimer) {
      clearTimeout(this.#reconnectTimer)
      this.#reconnectTimer = undefined
    }
    this.#connecting ??= this.#connect().finally(() => (this.#connecting = undefined))
    await this.#connecting
  }

  /** Stops listening for good: no reconnect, no poll; the connection is ended. */
  async close(): Promise<void> {
    this.#closed = true
    this.#watchers.clear()
    clearTimeout(this.#reconnectTimer)
    this.#reconnectTimer = undefined
    this.#stopPoll()
    this.#stopHeartbeat()
    const client = this.#client
    this.#client = undefined
    this.#listening = false
    await this.#connecting?.catch(() => undefined)
    if (client) {
      await withDeadline(client.end(), 2_000, () =>
        timeoutError(postgresLabel(), 'closing the LISTEN connection', 2_000),
      ).catch(() => destroy(client))
    }
  }

  async #connect(): Promise<void> {
    const label = postgresLabel(this.where)
    const deadline = <T>(promise: Promise<T>, what: string) =>
      withDeadline(promise, this.timeoutMs, () => timeoutError(label, what, this.timeoutMs))
    let client: Client | undefined
    try {
      client = await this.makeClient()
      const current = client
      current.on('error', () => this.#lost(current))
      current.on('end', () => this.#lost(current))
      current.on('notification', (message: Notification) => {
        if (message.channel !== this.channel || !message.payload) return
        const { resource, change } = parsePayload(message.payload)
        this.#wake(resource, change)
      })
      this.#client = current
      this.connects++
      await deadline(current.connect(), 'connecting the LISTEN connection')
      await deadline(current.query(`LISTEN "${this.channel}"`), 'LISTEN')
      if (this.#closed || this.#client !== current) throw new BackendClosedError('postgres')
      this.#listening = true
      this.#attempt = 0
      this.#stopPoll()
      this.#startHeartbeat(current)
      // Anything released while we were not listening was not pushed: let every watcher look.
      this.#wakeAll()
    } catch (error) {
      if (client && this.#client === client) this.#lost(client)
      else if (client) destroy(client) // closed meanwhile
      throw backendError(label, 'the LISTEN connection', error)
    }
  }

  #lost(client: Client): void {
    if (this.#client !== client) return
    this.#client = undefined
    this.#listening = false
    this.#stopHeartbeat()
    destroy(client)
    if (this.#closed) return
    this.#startPoll()
    this.#scheduleReconnect()
  }

  #scheduleReconnect(): void {
    // Called from inside a failing #connect() too: the timer's ready() joins any attempt then
    // still under way, so attempts never overlap.
    if (this.#reconnectTimer || this.#closed) return
    const ceiling = Math.min(5_000, 100 * 2 ** Math.min(this.#attempt++, 10))
    const delay = ceiling / 2 + (Math.random() * ceiling) / 2
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = undefined
      this.ready().catch(() => {
        // #connect() already scheduled the next attempt through #lost().
      })
    }, delay)
    this.#reconnectTimer.unref()
  }

  #startPoll(): void {
    if (this.#pollTimer) return
    this.#pollTimer = setInterval(() => this.#wakeAll(), this.pollMs)
    this.#pollTimer.unref()
  }

  #stopPoll(): void {
    clearInterval(this.#pollTimer)
    this.#pollTimer = undefined
  }

  #startHeartbeat(client: Client): void {
    this.#stopHeartbeat()
    let busy = false
    this.#heartbeatTimer = setInterval(() => {
      if (busy) return
      busy = true
      withDeadline(client.query('SELECT 1'), this.timeoutMs, () =>
        timeoutError(postgresLabel(), 'the LISTEN heartbeat', this.timeoutMs),
      )
        .catch(() => this.#lost(client))
        .finally(() => (busy = false))
    }, this.heartbeatMs)
    this.#heartbeatTimer.unref()
  }

  #stopHeartbeat(): void {
    clearInterval(this.#heartbeatTimer)
    this.#heartbeatTimer = undefined
  }

  #wake(resource: string, change: PlacedChange | undefined): void {
    const set = this.#watchers.get(resource)
    if (!set) return
    if (!change) return fanOut(set)
    for (const fn of [...set]) {
      queueMicrotask(() => {
        try {
          // Each its own copy: a watcher that edits the list does not change another's.
          fn({
            wake: [...change.wake!],
            ...(change.granted ? { granted: change.granted.map((g) => ({ ...g })) } : {}),
          })
        } catch {
          // The others still hear of the change.
        }
      })
    }
  }

  #wakeAll(): void {
    for (const set of this.#watchers.values()) fanOut(set)
  }
}

/**
 * A notification's payload: a bare resource (older migrations, or a wake list too long for
 * NOTIFY: unknown, every waiter asks again), or notify_change's JSON (never a resource: no
 * resource name has a brace). JSON that does not read as ours counts as unknown.
 */
export function parsePayload(payload: string): { resource: string; change?: PlacedChange } {
  if (payload.charCodeAt(0) !== 123 /* { */) return { resource: payload }
  try {
    const { resource, wake, granted } = JSON.parse(payload) as {
      resource?: unknown
      wake?: unknown
      granted?: unknown
    }
    if (typeof resource !== 'string') return { resource: '' }
    if (!Array.isArray(wake) || !wake.every((id) => typeof id === 'string')) return { resource }
    // Migration 7's release: the grants it made, each naming the place it was made for. One
    // that does not read as ours is left out (its candidate is in `wake`: it asks again).
    const grants = Array.isArray(granted) ? granted.filter(isPlacedGrant) : []
    return { resource, change: grants.length ? { wake, granted: grants } : { wake } }
  } catch {
    return { resource: '' }
  }
}

/** A grant a release made, as its NOTIFY names it: for the place numbered `place`. */
export interface PlacedGrant {
  candidate: string
  token: number
  place: number
}

/** A change as the LISTEN connection reads it: grants still name their places. */
export interface PlacedChange extends Omit<WatchChange, 'granted'> {
  granted?: PlacedGrant[]
}

function isPlacedGrant(value: unknown): value is PlacedGrant {
  const g = value as Partial<PlacedGrant> | null
  return (
    typeof g === 'object' &&
    g !== null &&
    typeof g.candidate === 'string' &&
    Number.isSafeInteger(g.token) &&
    g.token! > 0 &&
    Number.isSafeInteger(g.place)
  )
}

/** Ends a client at once, without waiting for the server (whose path may be hung). */
function destroy(client: Client): void {
  const stream = (client as unknown as { connection?: { stream?: { destroy?: () => void } } })
    .connection?.stream
  try {
    stream?.destroy?.()
  } catch {
    // already gone
  }
  client.end().catch(() => undefined)
}
