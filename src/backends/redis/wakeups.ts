/**
 * Push for the Redis backend: one subscriber connection per backend, shared by all its watches,
 * subscribed to each watched resource's channel (the scripts PUBLISH there on every change) and
 * to its keys' keyspace-notification channels, so that a grant deleted by hand (a raw DEL, which
 * publishes nothing) wakes the watchers too when the server sends those notifications.
 *
 * ioredis' own resubscribe is off: ours tells us when the server confirmed it, so every watcher
 * can then be woken once (a release may have been published while we were disconnected).
 */
import type { Cluster, Redis } from 'ioredis'
import type { Unwatch } from '../../backend.js'
import { type CloseGate, fanOut } from '../kit.js'
import { keyspaceChannels, resourceKeys } from './layout.js'
import { endpoint, OWNED_CLIENT_DEFAULTS } from './options.js'

/**
 * The keyspace events our own renewals cause on a resource's keys: a ZADD of the holder's expiry
 * (with `z`) and, about once per lease, a PEXPIRE raising the keys' TTL (with `g`). Neither can
 * take a grant away (a key whose TTL an operator cut short is heard when it expires, `x`), so
 * they wake nobody: otherwise every renewal would wake every watcher of the resource.
 */
const QUIET_KEYSPACE_EVENTS: ReadonlySet<string> = new Set(['zadd', 'expire'])

/**
 * The notify-keyspace-events classes the backend needs to hear a grant deleted by hand: `K`
 * (keyspace channels), `g` (DEL, UNLINK, RENAME, EXPIRE in the past), `h` (HDEL of a grant, the
 * grants key is a hash), `x` (a key expired after an operator cut its TTL short).
 */
export const KEYSPACE_FLAGS = 'Kghx'

/** The stable code of the warning that keyspace notifications are off (or unreadable). */
export const KEYSPACE_WARNING = 'CONCLAVE_REDIS_KEYSPACE'

/** The letters of KEYSPACE_FLAGS that a notify-keyspace-events value lacks (`A` has g, h, x). */
export function missingKeyspaceFlags(flags: string): string {
  return [...KEYSPACE_FLAGS]
    .filter((flag) => !flags.includes(flag) && !(flag !== 'K' && flags.includes('A')))
    .join('')
}

/** The commandTimeout a Redis or Cluster client was made with. */
function commandTimeoutOf(client: Redis | Cluster): number | undefined {
  return client.isCluster
    ? (client as Cluster).options.redisOptions?.commandTimeout
    : (client as Redis).options.commandTimeout
}

/** Servers (host:port) already warned about, so a process says it once per server. */
const keyspaceWarned = new Set<string>()

/**
 * The backend's call deadline and error naming (backend.ts), for the calls made here: the
 * subscriber's SUBSCRIBE (`connection` 'subscriber', so a failure names that connection's error)
 * and the CONFIG GET on the backend's client.
 */
export type TimedCall = <T>(
  what: string,
  fn: () => Promise<T>,
  connection?: 'client' | 'subscriber',
) => Promise<T>

/** What the wake-ups of one backend need from it. */
export interface WakeupSettings {
  /** The backend's client: duplicated for the subscriber, asked for notify-keyspace-events. */
  client: Redis | Cluster
  /** The backend's prefix, for the channel names. */
  prefix: string
  /** How long a channel stays subscribed after its last watch ends. */
  lingerMs: number
  /** The subscriber's PING interval, and how long an answer may take before it reconnects. */
  heartbeatMs: number
  /** The backend's close gate: no (re)subscribing once close() began. */
  gate: CloseGate
  timed: TimedCall
}

interface Channel {
  readonly listeners: Set<() => void>
  /** The pub/sub channels it listens to: the resource's own, then its keys' keyspace ones. */
  readonly names: readonly string[]
  /** A wake-up of the listeners is queued: messages arriving meanwhile need no other. */
  pending: boolean
  /** Settles when the server confirmed our SUBSCRIBE (undefined: not subscribed). */
  subscribed: Promise<void> | undefined
  /** The last SUBSCRIBE/UNSUBSCRIBE sent, so they reach the server in order. */
  queue: Promise<void>
  /** Set while the channel has no listeners but stays subscribed a little longer. */
  linger: NodeJS.Timeout | undefined
}

/** The subscriber connection of one backend and the watchers it wakes. */
export class Wakeups {
  readonly #settings: WakeupSettings
  #subscriber: Redis | undefined
  /** The subscriber connection's last error, until it is ready again. */
  #error: Error | undefined
  #heartbeat: NodeJS.Timeout | undefined
  /** Per watched resource, by its own channel's name. */
  readonly #channels = new Map<string, Channel>()
  /** Every subscribed pub/sub channel name (own and keyspace) to its resource's Channel. */
  readonly #routes = new Map<string, Channel>()
  /** notify-keyspace-events was read (or refused): it is not asked again. */
  #keyspaceChecked = false

  constructor(settings: WakeupSettings) {
    this.#settings = settings
  }

  /** The subscriber connection's last error while it is down: the cause of a failed watch. */
  get connectionError(): Error | undefined {
    return this.#error
  }

  /**
   * The Backend contract's watch (the resource already validated): resolves once the server
   * confirmed the SUBSCRIBE, so a release after that is never missed.
   */
  async watch(resource: string, onChange: () => void): Promise<Unwatch> {
    const { prefix, client, gate } = this.#settings
    const name = resourceKeys(prefix, resource).channel
    const subscriber = this.#connection()
    void this.#checkKeyspaceEvents()
    let channel = this.#channels.get(name)
    if (!channel) {
      // The keys' keyspace channels are subscribed whatever the server's setting says (it may
      // be unreadable, or changed later): with notifications off they are merely silent.
      const db = client.isCluster ? 0 : Number((client as Redis).options?.db ?? 0)
      channel = {
        listeners: new Set(),
        names: [name, ...keyspaceChannels(prefix, resource, db)],
        pending: false,
        subscribed: undefined,
        queue: Promise.resolve(),
        linger: undefined,
      }
      this.#channels.set(name, channel)
      for (const n of channel.names) this.#routes.set(n, channel)
    }
    const ch = channel
    clearTimeout(ch.linger)
    ch.linger = undefined
    const entry = () => onChange()
    ch.listeners.add(entry)
    // Idempotent (a second call finds its entry gone). With lingerMs 0 it resolves after the
    // UNSUBSCRIBE, which unwatch() then awaits.
    const stop = (lingerMs: number) => {
      if (!ch.listeners.delete(entry) || ch.listeners.size > 0 || gate.closing) return
      if (lingerMs === 0) return this.#unsubscribe(subscriber, ch, name)
      ch.linger = setTimeout(() => void this.#unsubscribe(subscriber, ch, name), lingerMs)
      ch.linger.unref()
    }
    try {
      ch.subscribed ??= this.#subscribe(subscriber, ch)
      await this.#settings.timed('watch', () => ch.subscribed!, 'subscriber')
    } catch (error) {
      await stop(0)
      throw error
    }
    const unwatch: Unwatch = async () => stop(this.#settings.lingerMs)
    return unwatch
  }

  /** Forgets every watch and drops the subscriber connection (part of the backend's close). */
  close(): void {
    for (const ch of this.#channels.values()) clearTimeout(ch.linger)
    this.#channels.clear()
    this.#routes.clear()
    clearInterval(this.#heartbeat)
    this.#subscriber?.disconnect()
  }

  /** The one subscriber connection of this backend, made on first watch. */
  #connection(): Redis {
    this.#settings.gate.check()
    if (this.#subscriber) return this.#subscriber
    const { client, heartbeatMs } = this.#settings
    // Our own resubscribe (not ioredis's) so we know when it is confirmed and can then wake
    // every watcher: a release may have been published while we were disconnected.
    const subscriberOptions = {
      autoResubscribe: false,
      enableOfflineQueue: true,
      lazyConnect: false,
      commandTimeout: commandTimeoutOf(client) ?? OWNED_CLIENT_DEFAULTS.commandTimeout,
      maxRetriesPerRequest: 1,
      // A PING (or SUBSCRIBE) unanswered this long: ioredis drops the socket and reconnects.
      socketTimeout: heartbeatMs,
    }
    // In a Redis Cluster a PUBLISH reaches every node, so the Cluster client's own subscriber
    // connection (on any node, moved by ioredis when that node fails) hears every resource.
    const subscriber = (
      client.isCluster
        ? (client as Cluster).duplicate([], {
            redisOptions: { ...(client as Cluster).options.redisOptions, ...subscriberOptions },
          })
        : (client as Redis).duplicate(subscriberOptions)
    ) as Redis
    this.#subscriber = subscriber
    this.#heartbeat = setInterval(() => {
      if (subscriber.status === 'ready') subscriber.ping().catch(noop)
    }, heartbeatMs)
    this.#heartbeat.unref()
    // Reported through failed watches, as their cause; ioredis reconnects.
    subscriber.on('error', (error: Error) => (this.#error = error))
    subscriber.on('message', (channel: string, message: string) => {
      const ch = this.#routes.get(channel)
      if (!ch) return
      // On a keyspace channel the message is the event's name (del, hdel, expired, ...).
      if (channel !== ch.names[0] && QUIET_KEYSPACE_EVENTS.has(message)) return
      // One wake-up for the messages of one read: a release alone is a PUBLISH, an HDEL, a
      // ZREM and the keys' DEL.
      if (ch.pending) return
      ch.pending = true
      queueMicrotask(() => {
        ch.pending = false
        fanOut(ch.listeners)
      })
    })
    let connectedBefore = false
    subscriber.on('ready', () => {
      this.#error = undefined
      if (!connectedBefore) {
        connectedBefore = true
        return
      }
      void this.#resubscribe(subscriber)
    })
    return subscriber
  }

  async #resubscribe(subscriber: Redis): Promise<void> {
    // A new connection has no subscriptions: lingering channels are simply forgotten.
    for (const [name, ch] of this.#channels) {
      if (ch.listeners.size > 0) continue
      clearTimeout(ch.linger)
      this.#forget(name, ch)
    }
    const channels = [...this.#channels]
    const again = channels.map(([, ch]) => (ch.subscribed = this.#subscribe(subscriber, ch)))
    // Wake everyone once the subscriptions are back (or failed: their own timers still run).
    await Promise.allSettled(again)
    if (this.#settings.gate.closing) return
    for (const [, ch] of channels) fanOut(ch.listeners)
  }

  /**
   * Queued behind this channel's earlier SUBSCRIBE and ahead of any later one, so a watch made
   * meanwhile is not undone. Best effort: a failed UNSUBSCRIBE only leaves a channel whose
   * messages nobody hears.
   */
  async #unsubscribe(subscriber: Redis, ch: Channel, name: string): Promise<void> {
    ch.linger = undefined
    if (ch.listeners.size > 0 || this.#settings.gate.closing) return
    ch.subscribed = undefined
    const op = ch.queue.then(() => subscriber.unsubscribe(...ch.names)).then(noop, noop)
    ch.queue = op
    await op
    if (ch.queue === op && !ch.subscribed && this.#channels.get(name) === ch) this.#forget(name, ch)
  }

  #forget(name: string, ch: Channel): void {
    this.#channels.delete(name)
    for (const n of ch.names) if (this.#routes.get(n) === ch) this.#routes.delete(n)
  }

  /** One SUBSCRIBE for the resource's own channel and its keys' keyspace channels. */
  #subscribe(subscriber: Redis, ch: Channel): Promise<void> {
    const done = ch.queue.then(async () => {
      await subscriber.subscribe(...ch.names)
    })
    ch.queue = done.catch(noop)
    // A failed subscribe is retried by the next watch.
    done.catch(() => {
      if (ch.subscribed === done) ch.subscribed = undefined
    })
    return done
  }

  /**
   * Reads notify-keyspace-events once (at the first watch) and warns, once per server and
   * process, when it lacks what the backend needs to hear a grant deleted by hand. Never sets
   * it (managed Redis refuses CONFIG SET, and it is the operator's server). A refused CONFIG
   * GET counts as off; a failed connection is asked again at the next watch.
   */
  async #checkKeyspaceEvents(): Promise<void> {
    if (this.#keyspaceChecked) return
    this.#keyspaceChecked = true
    const { client, timed } = this.#settings
    const where = endpoint(client)
    let flags: string | undefined
    let unreadable: string | undefined
    try {
      const reply = await timed('config get', () => client.config('GET', 'notify-keyspace-events'))
      if (Array.isArray(reply) && reply.length >= 2) flags = String(reply[1])
      else unreadable = 'no such setting in the answer'
    } catch (error) {
      const cause = (error as { cause?: unknown }).cause
      if (!(cause instanceof Error) || cause.name !== 'ReplyError') {
        // No answer (down, closing): unknown, not refused.
        this.#keyspaceChecked = false
        return
      }
      unreadable = cause.message
    }
    const missing = flags === undefined ? KEYSPACE_FLAGS : missingKeyspaceFlags(flags)
    if (missing === '' || keyspaceWarned.has(where)) return
    keyspaceWarned.add(where)
    const setting =
      flags === undefined
        ? `conclave could not read notify-keyspace-events on the redis at ${where} (CONFIG GET: ${unreadable}), so it assumes keyspace notifications are off.`
        : `The redis at ${where} has notify-keyspace-events "${flags}", without ${[...missing].join(', ')}.`
    process.emitWarning(
      `${setting} A grant deleted by hand (a DEL, UNLINK, HDEL or EXPIRE of conclave's keys) is then heard by nobody: its holder goes on until its next renewal (up to renewMs later), while nobody else may win until the old grant could have expired. For its holder to step down within a round trip, set notify-keyspace-events ${KEYSPACE_FLAGS} (or add ${missing} to the flags already set); see docs/redis.md.`,
      { type: 'ConclaveWarning', code: KEYSPACE_WARNING },
    )
  }
}

function noop(): void {}
