/**
 * Push for the Redis backend: one subscriber connection per backend, shared by all its watches,
 * subscribed to each watched resource's channel (the scripts PUBLISH there on every change) and
 * to its keys' keyspace-notification channels, so that a grant deleted by hand (a raw DEL, which
 * publishes nothing) wakes the watchers too when the server sends those notifications.
 *
 * On a Redis Cluster, one subscriber connection per master instead, each resource subscribed on
 * the master that serves its slot: keyspace notifications are sent only by the node that owns
 * the key (a PUBLISH is broadcast, they are not), and the Cluster client's own subscriber sits
 * on one random node that ioredis moves, dropping messages meanwhile, without telling us. When
 * a slot moves (the client refreshed its slot map), the resource is subscribed on its new master
 * and its watchers woken once.
 *
 * ioredis' own resubscribe is off: ours tells us when the server confirmed it, so every watcher
 * can then be woken once (a release may have been published while we were disconnected).
 */
import type { Unwatch, WatchChange } from '../../backend.js'
import { type CloseGate, fanOut } from '../kit.js'
import {
  ioredisSubscriber,
  ioredisSubscriberOptions,
  type RedisConnection,
  type SubscriberConnection,
} from './client.js'
import { keySlot, keyspaceChannels, resourceKeys } from './layout.js'
import { OWNED_CLIENT_DEFAULTS } from './options.js'

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
  connection: RedisConnection
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

/** One subscriber connection: the standalone server's, or one Cluster master's. */
interface Link {
  /** The Cluster node's host:port ('' for a standalone or Sentinel client). */
  readonly node: string
  readonly subscriber: SubscriberConnection
  readonly heartbeat: NodeJS.Timeout
  /** The connection's last error, until it is ready again. */
  error: Error | undefined
}

/** ioredis' default reconnect backoff (a Cluster's node connections have none of their own). */
const reconnectDelay = (times: number): number => Math.min(times * 50, 2_000)

interface Channel {
  readonly listeners: Set<(change?: WatchChange) => void>
  /** The Cluster slot of the resource's keys (undefined: not a Cluster). */
  readonly slot: number | undefined
  /** The connection it is subscribed on (moved when a Cluster slot changes master). */
  link: Link
  /** The pub/sub channels it listens to: the resource's own, then its keys' keyspace ones. */
  readonly names: readonly string[]
  /** A wake-up of the listeners is queued: messages arriving meanwhile need no other. */
  pending: boolean
  /**
   * What the queued wake-up tells: the waiters named by the scripts' messages of this read
   * (merged), or undefined when one of them could not tell (an older library's '1', a hand edit).
   */
  wake: Set<string> | undefined
  /** A message of our own scripts came in the queued read. */
  own: boolean
  /** Settles when the server confirmed our SUBSCRIBE (undefined: not subscribed). */
  subscribed: Promise<void> | undefined
  /** `subscribed` once it resolved: a watch then has nothing to wait for. */
  confirmed: Promise<void> | undefined
  /** The last SUBSCRIBE/UNSUBSCRIBE sent, so they reach the server in order. */
  queue: Promise<void>
  /**
   * Set while the channel has no listeners but stays subscribed a little longer, and not always
   * cleared by a new watch: one timer per linger period, not one per unwatch. When it fires,
   * the channel is unsubscribed only if it has had no listener for lingerMs (`idleSince`).
   */
  linger: NodeJS.Timeout | undefined
  /** When (performance.now()) the last listener left. */
  idleSince: number
}

/** The subscriber connections of one backend and the watchers they wake. */
export class Wakeups {
  readonly #settings: WakeupSettings
  /** By node ('' for a standalone or Sentinel client). */
  readonly #links = new Map<string, Link>()
  /** On a Cluster client: re-homes the channels whenever it refreshed its slot map. */
  #onRefresh: (() => void) | undefined
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
    for (const link of this.#links.values()) if (link.error) return link.error
    return undefined
  }

  /**
   * The Backend contract's watch (the resource already validated; `name`, its channel, when the
   * caller has it): resolves once the server confirmed the SUBSCRIBE, so a release after that
   * is never missed.
   */
  async watch(
    resource: string,
    onChange: (change?: WatchChange) => void,
    name = resourceKeys(this.#settings.prefix, resource).channel,
  ): Promise<Unwatch> {
    const { prefix, connection, gate } = this.#settings
    gate.check()
    const slot = connection.cluster ? keySlot(resource) : undefined
    if (!this.#channels.has(name) && slot !== undefined) await this.#knowSlot(slot)
    if (!this.#keyspaceChecked) void this.#checkKeyspaceEvents()
    let channel = this.#channels.get(name)
    if (!channel) {
      // The keys' keyspace channels are subscribed whatever the server's setting says (it may
      // be unreadable, or changed later): with notifications off they are merely silent.
      const db = connection.db
      channel = {
        listeners: new Set(),
        slot,
        link: this.#link(slot === undefined ? '' : this.#masterOf(slot)!),
        names: [name, ...keyspaceChannels(prefix, resource, db)],
        pending: false,
        wake: undefined,
        own: false,
        subscribed: undefined,
        confirmed: undefined,
        queue: Promise.resolve(),
        linger: undefined,
        idleSince: 0,
      }
      this.#channels.set(name, channel)
      for (const n of channel.names) this.#routes.set(n, channel)
    }
    const ch = channel
    const entry = (change?: WatchChange) => onChange(change)
    ch.listeners.add(entry)
    // Idempotent (a second call finds its entry gone). With lingerMs 0 it resolves after the
    // UNSUBSCRIBE, which unwatch() then awaits.
    const stop = (lingerMs: number) => {
      if (!ch.listeners.delete(entry) || ch.listeners.size > 0 || gate.closing) return
      if (lingerMs === 0) {
        clearTimeout(ch.linger)
        return this.#unsubscribe(ch, name)
      }
      ch.idleSince = performance.now()
      // A linger timer still running from an earlier unwatch checks idleSince when it fires.
      ch.linger ??= this.#lingerTimer(ch, name, lingerMs)
    }
    try {
      // Subscribed and confirmed already (the usual case of a resource used again): no wait.
      if (ch.subscribed === undefined || ch.confirmed !== ch.subscribed) {
        const subscribed = (ch.subscribed ??= this.#subscribe(ch))
        await this.#settings.timed('watch', () => subscribed, 'subscriber')
        if (ch.subscribed === subscribed) ch.confirmed = subscribed
      }
    } catch (error) {
      await stop(0)
      throw error
    }
    const unwatch: Unwatch = async () => stop(this.#settings.lingerMs)
    return unwatch
  }

  /**
   * Unsubscribes `ch` once it has had no listener for `lingerMs`: fires lingerMs after it is
   * set, and sets itself again for the rest when a listener came and went meanwhile.
   */
  #lingerTimer(ch: Channel, name: string, lingerMs: number): NodeJS.Timeout {
    const timer = setTimeout(() => {
      ch.linger = undefined
      if (ch.listeners.size > 0 || this.#settings.gate.closing) return
      const left = ch.idleSince + lingerMs - performance.now()
      if (left > 1) ch.linger = this.#lingerTimer(ch, name, left)
      else void this.#unsubscribe(ch, name)
    }, lingerMs)
    timer.unref()
    return timer
  }

  /** Forgets every watch and drops the subscriber connections (part of the backend's close). */
  close(): void {
    for (const ch of this.#channels.values()) clearTimeout(ch.linger)
    this.#channels.clear()
    this.#routes.clear()
    if (this.#onRefresh) this.#settings.connection.cluster?.off('refresh', this.#onRefresh)
    for (const link of this.#links.values()) this.#drop(link)
  }

  /** The master serving a Cluster slot, as the client last mapped it (host:port). */
  #masterOf(slot: number): string | undefined {
    return this.#settings.connection.cluster?.slots?.[slot]?.[0]
  }

  /** Makes the Cluster client map its slots first if it has not yet (a watch before any call). */
  async #knowSlot(slot: number): Promise<void> {
    if (this.#masterOf(slot) !== undefined) return
    const cluster = this.#settings.connection.cluster!
    await this.#settings.timed(
      'watch',
      () =>
        new Promise<void>((resolve, reject) =>
          cluster.refreshSlotsCache((error) => {
            if (error) reject(error)
            else if (this.#masterOf(slot) === undefined)
              reject(new Error(`no master of the Redis Cluster serves slot ${slot}`))
            else resolve()
          }),
        ),
      'subscriber',
    )
  }

  /** The subscriber connection to a node ('' : the standalone one), made on first use. */
  #link(node: string): Link {
    this.#settings.gate.check()
    const existing = this.#links.get(node)
    if (existing) return existing
    const { connection, heartbeatMs } = this.#settings
    // Our own resubscribe (not the client's) so we know when it is confirmed and can then wake
    // every watcher: a release may have been published while we were disconnected.
    const settings = {
      heartbeatMs,
      defaultCommandTimeoutMs: OWNED_CLIENT_DEFAULTS.commandTimeout!,
    }
    let subscriber: SubscriberConnection
    const cluster = connection.cluster
    if (cluster) {
      // A copy of the Cluster's own connection to that node (its credentials, TLS, ...), but
      // reconnecting by itself and never read-only.
      const [host, port] = splitNode(node)
      const base =
        cluster.nodes('all').find((n) => `${n.options.host}:${n.options.port}` === node) ??
        cluster.nodes('all')[0]!
      subscriber = ioredisSubscriber(
        base.duplicate({
          ...ioredisSubscriberOptions(cluster, settings),
          host,
          port,
          readOnly: false,
          retryStrategy: reconnectDelay,
        }),
      )
      if (!this.#onRefresh) {
        this.#onRefresh = () => this.#rehome()
        cluster.on('refresh', this.#onRefresh)
      }
    } else {
      subscriber = connection.subscriber(settings)
    }
    const heartbeat = setInterval(() => {
      if (subscriber.ready) subscriber.ping().catch(noop)
    }, heartbeatMs)
    heartbeat.unref()
    const link: Link = { node, subscriber, heartbeat, error: undefined }
    this.#links.set(node, link)
    // Reported through failed watches, as their cause; ioredis reconnects.
    subscriber.on('error', (error: Error) => (link.error = error))
    subscriber.on('message', (channel: string, message: string) => {
      const ch = this.#routes.get(channel)
      if (!ch) return
      const own = channel === ch.names[0]
      // On a keyspace channel the message is the event's name (del, hdel, expired, ...).
      if (!own && QUIET_KEYSPACE_EVENTS.has(message)) return
      // One wake-up for the messages of one read: a release alone is a PUBLISH, an HDEL, a
      // ZREM and the keys' DEL.
      if (!ch.pending) {
        ch.pending = true
        ch.wake = new Set()
        ch.own = false
        queueMicrotask(() => this.#deliver(ch))
      }
      if (own) {
        ch.own = true
        const wake = parseWake(message)
        if (wake === undefined) ch.wake = undefined
        else if (ch.wake) for (const id of wake) ch.wake.add(id)
      }
    })
    let connectedBefore = false
    subscriber.on('ready', () => {
      link.error = undefined
      if (!connectedBefore) {
        connectedBefore = true
        return
      }
      void this.#resubscribe(link)
    })
    if (cluster) {
      // A master lost may have failed over: have the client map the slots again (then 'refresh').
      subscriber.on('close', () => {
        if (!this.#settings.gate.closing) cluster.refreshSlotsCache()
      })
    }
    return link
  }

  /**
   * The queued wake-up of a channel's listeners. A keyspace event in a read with no message of
   * our scripts is unknown (a key deleted by hand: everyone asks again). One in the same read as
   * a script's message is taken for that script's own writes: the script publishes after them
   * and the server sends both in one reply (a hand edit that happened to land in the same read
   * frees no ticket anyway: the guard holds every grant back until the old ones could expire,
   * and every watcher still hears a change).
   */
  #deliver(ch: Channel): void {
    ch.pending = false
    fanOutChange(ch.listeners, ch.own && ch.wake ? { wake: [...ch.wake] } : undefined)
  }

  #drop(link: Link): void {
    clearInterval(link.heartbeat)
    link.subscriber.disconnect()
    if (this.#links.get(link.node) === link) this.#links.delete(link.node)
  }

  /**
   * After the Cluster client mapped its slots again: every channel whose slot another master
   * serves now is subscribed there, then its watchers are woken once (a change may have gone
   * unheard during the move); connections no channel uses any more are dropped.
   */
  #rehome(): void {
    if (this.#settings.gate.closing) return
    for (const [name, ch] of this.#channels) {
      if (ch.slot === undefined) continue
      const node = this.#masterOf(ch.slot)
      if (node === undefined || node === ch.link.node) continue
      const old = ch.link
      old.subscriber.unsubscribe(ch.names).catch(noop)
      if (ch.listeners.size === 0) {
        clearTimeout(ch.linger)
        this.#forget(name, ch)
        continue
      }
      ch.link = this.#link(node)
      // The old connection's queue is no order for the new one (and may hang on a dead node).
      ch.queue = Promise.resolve()
      const subscribed = (ch.subscribed = this.#subscribe(ch))
      subscribed.then(() => {
        if (!this.#settings.gate.closing) fanOut(ch.listeners)
      }, noop)
    }
    const used = new Set([...this.#channels.values()].map((ch) => ch.link))
    for (const link of [...this.#links.values()]) if (!used.has(link)) this.#drop(link)
  }

  async #resubscribe(link: Link): Promise<void> {
    // A new connection has no subscriptions: lingering channels are simply forgotten.
    for (const [name, ch] of this.#channels) {
      if (ch.link !== link || ch.listeners.size > 0) continue
      clearTimeout(ch.linger)
      this.#forget(name, ch)
    }
    const channels = [...this.#channels].filter(([, ch]) => ch.link === link)
    const again = channels.map(([, ch]) => (ch.subscribed = this.#subscribe(ch)))
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
  async #unsubscribe(ch: Channel, name: string): Promise<void> {
    ch.linger = undefined
    if (ch.listeners.size > 0 || this.#settings.gate.closing) return
    ch.subscribed = undefined
    ch.confirmed = undefined
    const { subscriber } = ch.link
    const op = ch.queue.then(() => subscriber.unsubscribe(ch.names)).then(noop, noop)
    ch.queue = op
    await op
    if (ch.queue === op && !ch.subscribed && this.#channels.get(name) === ch) this.#forget(name, ch)
  }

  #forget(name: string, ch: Channel): void {
    this.#channels.delete(name)
    for (const n of ch.names) if (this.#routes.get(n) === ch) this.#routes.delete(n)
  }

  /** One SUBSCRIBE, on the channel's connection, of the resource's own and keyspace channels. */
  #subscribe(ch: Channel): Promise<void> {
    const { subscriber } = ch.link
    const done = ch.queue.then(async () => {
      await subscriber.subscribe(ch.names)
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
    const { connection, timed } = this.#settings
    const where = connection.endpoint()
    let flags: string | undefined
    let unreadable: string | undefined
    try {
      const reply = await timed('config get', () => connection.configGet('notify-keyspace-events'))
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

/** Calls every listener (each in its own microtask, as kit.ts's fanOut) with `change`. */
function fanOutChange(
  listeners: Iterable<(change?: WatchChange) => void>,
  change: WatchChange | undefined,
): void {
  if (change === undefined) {
    fanOut(listeners)
    return
  }
  for (const listener of [...listeners]) {
    queueMicrotask(() => {
      try {
        // Each its own copy: a listener that edits the list does not change another's.
        listener({ wake: [...change.wake!] })
      } catch {
        // The others still hear of the change.
      }
    })
  }
}

/** lib/line.lua's message when the line is empty. */
const NOBODY_TO_WAKE = '{"wake":[]}'
const NOBODY: readonly string[] = Object.freeze([])

/**
 * The waiters a script's message names: `{"wake":[...]}` (lib/line.lua), or undefined for any
 * other message ('1': unknown, as older versions of the scripts publish).
 */
export function parseWake(message: string): readonly string[] | undefined {
  // What most changes publish (nobody waits): no JSON.parse per message.
  if (message === NOBODY_TO_WAKE) return NOBODY
  if (message.charCodeAt(0) !== 123 /* { */) return undefined
  try {
    const wake = (JSON.parse(message) as { wake?: unknown }).wake
    if (Array.isArray(wake) && wake.every((id) => typeof id === 'string')) return wake
  } catch {
    // not ours: unknown
  }
  return undefined
}

/** host and port of a Cluster node key (host:port; the host may be IPv6, with colons). */
function splitNode(node: string): [string, number] {
  const at = node.lastIndexOf(':')
  return [node.slice(0, at), Number(node.slice(at + 1))]
}
