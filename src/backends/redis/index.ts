/**
 * The Redis backend: one Lua script per operation (expiry and tokens on the server's TIME),
 * keys hash-tagged per resource (one slot per script call, Redis Cluster safe), pub/sub on a
 * per-resource channel to wake waiters through one shared subscriber connection. The same
 * connection listens to the keys' keyspace notifications, when the server sends them, so a
 * grant deleted by hand (a raw DEL, which publishes nothing) wakes the watchers too.
 *
 * ioredis is an optional peer dependency: only types are imported statically; `{ url }` loads
 * it when the backend is made (and fails at once with a MissingPeerError without it).
 */
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import type { Redis, RedisOptions } from 'ioredis'
import {
  type AcquireRequest,
  type AcquireResult,
  type Backend,
  type Holder,
  type Json,
  type ReleaseRequest,
  type RenewRequest,
  type Unwatch,
  validateAcquire,
  validateRelease,
  validateRenew,
  validateResource,
} from '../../backend.js'
import {
  BackendError,
  ConclaveError,
  MissingPeerError,
  OptionsError,
  TicketsMismatchError,
} from '../../errors.js'
import { CloseGate } from '../kit.js'

export interface RedisBackendOptions {
  /**
   * Your ioredis client (left open by close()). Give it `commandTimeout` (and, to notice a
   * hung path sooner, `socketTimeout`) so a command fails instead of waiting forever.
   */
  client?: Redis
  /**
   * Or a `redis://` / `rediss://` URL: the backend makes its own client and closes it. Its
   * query may set `prefix` and `startupGrace`, and ioredis' `db`, `family`, `username`,
   * `password`, `connectionName`; any other parameter is refused.
   */
  url?: string
  /** ioredis options for the client made from `url` (merged over the backend's defaults). */
  clientOptions?: RedisOptions
  /** Prepended to every key and channel. Default `conclave:`. */
  prefix?: string
  /**
   * Each operation fails after this many ms without an answer, whatever the client's own
   * settings (the command may still run later; every operation is safe to retry). Default 5000.
   */
  timeoutMs?: number
  /**
   * How long a resource's channel stays subscribed after its last watch ends, so a candidate
   * that campaigns again soon need not wait for a SUBSCRIBE. Default 10000; 0 unsubscribes at once.
   */
  lingerMs?: number
  /**
   * The subscriber connection sends PING this often, and is replaced when an answer takes
   * longer than this, so a hung path (no RST, no FIN) is found and the waiters it serves are
   * woken after reconnecting. Default 5000.
   */
  heartbeatMs?: number
  /**
   * A redis-server that may have been up for less than one lease grants no new ticket
   * (renewals of the grants it holds go on), because a restart may have lost grants whose
   * holders still believe in their terms: it waits until its whole-second uptime reaches the
   * lease + 1 s (more than one lease of real uptime, and at most 2 s more). Default true. Turn it off only
   * for a Redis that cannot lose an acknowledged write (`appendonly yes` + `appendfsync
   * always`), or one you just started yourself with nothing in it. See docs/redis.md.
   */
  startupGrace?: boolean
}

/** Defaults for a client the backend makes: fail fast instead of queueing while disconnected. */
export const OWNED_CLIENT_DEFAULTS: Readonly<RedisOptions> = Object.freeze({
  commandTimeout: 2_000,
  socketTimeout: 3_000,
  connectTimeout: 2_000,
  maxRetriesPerRequest: 1,
  retryStrategy: (times: number) => Math.min(times * 100, 1_000),
})

/** Grants renewed by one script call (a call runs alone on the server: keep each one short). */
const RENEW_BATCH = 1_000

/** A token key outlives the lease of its last new grant by this much (see docs/redis.md). */
const TOKEN_TTL_MS = 7 * 24 * 3_600_000

const OPTION_NAMES = [
  'client',
  'url',
  'clientOptions',
  'prefix',
  'timeoutMs',
  'lingerMs',
  'heartbeatMs',
  'startupGrace',
] as const

const PREFIX_RULE =
  'prefix must be 0 to 100 printable ASCII characters without spaces or braces ({ } would break the hash tag).'

interface Script {
  readonly name: string
  readonly source: string
  readonly sha: string
}

let scripts: Record<'acquire' | 'renew' | 'release' | 'holders', Script> | undefined

/** The Lua files next to this module (copied to dist by scripts/copy-assets.js). */
function loadScripts(): NonNullable<typeof scripts> {
  const load = (name: string): Script => {
    const source = readFileSync(new URL(`./scripts/${name}.lua`, import.meta.url), 'utf8')
    return { name, source, sha: createHash('sha1').update(source).digest('hex') }
  }
  scripts ??= {
    acquire: load('acquire'),
    renew: load('renew'),
    release: load('release'),
    holders: load('holders'),
  }
  return scripts
}

type Reply = unknown

function isNoScript(error: unknown): boolean {
  return error instanceof Error && error.message.startsWith('NOSCRIPT')
}

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

/** The keys and channel of one resource; all share the hash tag `{resource}`. */
export function resourceKeys(prefix: string, resource: string) {
  const base = `${prefix}{${resource}}`
  return {
    holders: `${base}:holders`,
    grants: `${base}:grants`,
    token: `${base}:token`,
    /** Expires with the holders key; alone, it says the keys were deleted by hand. */
    guard: `${base}:guard`,
    channel: `${base}:changed`,
  }
}

/**
 * The keyspace-notification channels of a resource's grant keys (holders and grants) in
 * database `db`: where the server reports a DEL, HDEL, expiry... of them, if configured to.
 */
export function keyspaceChannels(prefix: string, resource: string, db = 0): string[] {
  const keys = resourceKeys(prefix, resource)
  return [keys.holders, keys.grants].map((key) => `__keyspace@${db}__:${key}`)
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

export class RedisBackend implements Backend {
  readonly name = 'redis'
  readonly prefix: string
  readonly timeoutMs: number
  readonly lingerMs: number
  readonly heartbeatMs: number
  readonly startupGrace: boolean
  readonly #owned: boolean
  readonly #client: Redis
  /** The last connection error of a client the backend made, until it is ready again. */
  #clientError: Error | undefined
  /** The same for the subscriber connection. */
  #subscriberError: Error | undefined
  readonly #scripts = loadScripts()
  #subscriber: Redis | undefined
  #heartbeat: NodeJS.Timeout | undefined
  /** Per watched resource, by its own channel's name. */
  readonly #channels = new Map<string, Channel>()
  /** Every subscribed pub/sub channel name (own and keyspace) to its resource's Channel. */
  readonly #routes = new Map<string, Channel>()
  /** notify-keyspace-events was read (or refused): it is not asked again. */
  #keyspaceChecked = false
  readonly #gate = new CloseGate('redis')

  constructor(options: RedisBackendOptions) {
    if (typeof options !== 'object' || options === null) {
      throw new OptionsError(
        'options',
        options,
        'redisBackend takes an object: { client } (an ioredis client) or { url }.',
      )
    }
    const unknown = Object.keys(options).find(
      (name) => !(OPTION_NAMES as readonly string[]).includes(name),
    )
    if (unknown !== undefined) {
      throw new OptionsError(
        unknown,
        (options as unknown as Record<string, unknown>)[unknown],
        `Unknown redisBackend option. Known: ${OPTION_NAMES.join(', ')}.`,
      )
    }
    const { client, url, clientOptions } = options
    if (client !== undefined && url !== undefined) {
      throw new OptionsError(
        'url',
        typeof url === 'string' ? redactUrl(url) : url,
        'Give either { client } or { url }, not both.',
        'With your own client, the backend uses it as is.',
      )
    }
    // The URL's own settings (?prefix=, ?startupGrace=) count as options, given once.
    const fromUrl = url === undefined ? undefined : parseRedisUrl(url, 'url')
    for (const name of URL_SETTINGS) {
      if (fromUrl?.[name] !== undefined && options[name] !== undefined) {
        throw new OptionsError(
          name,
          options[name],
          `${name} is given both as an option and in the URL (?${name}=...): give it once.`,
        )
      }
    }
    const {
      prefix = fromUrl?.prefix ?? 'conclave:',
      timeoutMs = 5_000,
      lingerMs = 10_000,
      heartbeatMs = 5_000,
      startupGrace = fromUrl?.startupGrace ?? true,
    } = options
    if (typeof prefix !== 'string' || prefix.length > 100 || !/^[\x21-\x7a|~]*$/.test(prefix)) {
      throw new OptionsError('prefix', prefix, PREFIX_RULE)
    }
    if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 2 ** 31 - 1) {
      throw new OptionsError(
        'timeoutMs',
        timeoutMs,
        'timeoutMs must be an integer number of milliseconds from 1 to 2147483647.',
      )
    }
    if (!Number.isInteger(lingerMs) || lingerMs < 0 || lingerMs > 2 ** 31 - 1) {
      throw new OptionsError(
        'lingerMs',
        lingerMs,
        'lingerMs must be an integer number of milliseconds from 0 to 2147483647.',
      )
    }
    if (!Number.isInteger(heartbeatMs) || heartbeatMs < 100 || heartbeatMs > 2 ** 31 - 1) {
      throw new OptionsError(
        'heartbeatMs',
        heartbeatMs,
        'heartbeatMs must be an integer number of milliseconds from 100 to 2147483647.',
      )
    }
    if (typeof startupGrace !== 'boolean') {
      throw new OptionsError('startupGrace', startupGrace, 'startupGrace must be true or false.')
    }
    if (clientOptions !== undefined && (typeof clientOptions !== 'object' || !url)) {
      throw new OptionsError(
        'clientOptions',
        clientOptions,
        'clientOptions is an object of ioredis options, and only goes with { url }.',
      )
    }
    this.prefix = prefix
    this.timeoutMs = timeoutMs
    this.lingerMs = lingerMs
    this.heartbeatMs = heartbeatMs
    this.startupGrace = startupGrace
    if (client !== undefined) {
      if (!looksLikeIoredis(client)) {
        throw new OptionsError(
          'client',
          client,
          'client must be an ioredis Redis instance (new Redis(...)); a Cluster client is not supported yet.',
        )
      }
      this.#owned = false
      this.#client = client
    } else if (fromUrl !== undefined) {
      const { Redis: Client } = loadIoredis()
      this.#owned = true
      const owned = new Client(fromUrl.url, { ...OWNED_CLIENT_DEFAULTS, ...clientOptions })
      // Failures reach the election through the operations, which name this error as their
      // cause (ioredis itself rejects them only with "max retries per request"); ioredis
      // reconnects by itself.
      owned.on('error', (error: Error) => (this.#clientError = error))
      owned.on('ready', () => (this.#clientError = undefined))
      this.#client = owned
    } else {
      throw new OptionsError(
        'client',
        client,
        'redisBackend needs { client } (an ioredis client) or { url } (redis:// or rediss://).',
      )
    }
  }

  async acquire(request: AcquireRequest): Promise<AcquireResult> {
    this.#checkOpen()
    validateAcquire(request)
    const keys = resourceKeys(this.prefix, request.resource)
    const reply = await this.#run('acquire', this.#scripts.acquire, [
      [keys.holders, keys.grants, keys.token, keys.guard],
      [
        request.candidate,
        String(request.tickets),
        String(request.leaseMs),
        JSON.stringify(request.metadata ?? null),
        keys.channel,
        String(TOKEN_TTL_MS),
        this.startupGrace ? '1' : '0',
      ],
    ])
    const list = asArray(reply, 'acquire')
    if (Number(list[0]) === 2) {
      throw new TicketsMismatchError(request.resource, request.tickets, Number(list[1]))
    }
    const holders = parseHolders(list, 2)
    if (Number(list[0]) === 1) return { acquired: true, token: Number(list[1]), holders }
    // A free ticket the server may not grant yet: it started less than a lease ago, or the
    // keys were deleted by hand while their grants may live (until the guard runs out).
    const graceMs = Number(list[1])
    if (graceMs > 0) return { acquired: false, holders, retryInMs: graceMs }
    return {
      acquired: false,
      holders,
      // No readable holder although the tickets are taken (keys edited by hand): ask again later.
      retryInMs: holders.length ? Math.min(...holders.map((h) => h.remainingMs)) : request.leaseMs,
    }
  }

  async renew(requests: RenewRequest[]): Promise<boolean[]> {
    this.#checkOpen()
    requests.forEach(validateRenew)
    if (requests.length === 0) return []
    const script = this.#scripts.renew
    // One script call per batch of grants: 10,000 renewals are 10 commands, not 10,000, and no
    // single call holds the server for long.
    const calls: Call[] = []
    for (let i = 0; i < requests.length; i += RENEW_BATCH) {
      const keys: string[] = []
      const args: string[] = []
      for (const request of requests.slice(i, i + RENEW_BATCH)) {
        const k = resourceKeys(this.prefix, request.resource)
        keys.push(k.holders, k.grants, k.guard)
        args.push(request.candidate, String(request.token), String(request.leaseMs))
      }
      calls.push([keys, args])
    }
    const replies = await this.#timed('renew', async () => {
      const client = this.#client
      // One pipeline: one round trip for every batch.
      let results = await pipelined(client, script, calls)
      if (results.some(([error]) => isNoScript(error))) {
        // The script cache was flushed (restart, SCRIPT FLUSH): load it, run them all again.
        // Renewing twice is harmless: it only sets the same lease again.
        await client.script('LOAD', script.source)
        results = await pipelined(client, script, calls)
      }
      return results.flatMap(([error, reply]) => {
        if (error) throw error
        return asArray(reply, 'renew')
      })
    })
    if (replies.length !== requests.length) {
      throw new BackendError(`redis renew: ${replies.length} answers for ${requests.length} grants`)
    }
    return replies.map((reply) => Number(reply) === 1)
  }

  async release(request: ReleaseRequest): Promise<void> {
    this.#checkOpen()
    validateRelease(request)
    const keys = resourceKeys(this.prefix, request.resource)
    await this.#run('release', this.#scripts.release, [
      [keys.holders, keys.grants, keys.guard],
      [request.candidate, request.token === undefined ? '' : String(request.token), keys.channel],
    ])
  }

  async holders(resource: string): Promise<Holder[]> {
    this.#checkOpen()
    validateResource(resource)
    const keys = resourceKeys(this.prefix, resource)
    const reply = await this.#run('holders', this.#scripts.holders, [
      [keys.holders, keys.grants, keys.guard],
      [keys.channel],
    ])
    return parseHolders(asArray(reply, 'holders'), 0)
  }

  async watch(resource: string, onChange: () => void): Promise<Unwatch> {
    this.#checkOpen()
    validateResource(resource)
    const name = resourceKeys(this.prefix, resource).channel
    const subscriber = this.#subscriberConnection()
    void this.#checkKeyspaceEvents()
    let channel = this.#channels.get(name)
    if (!channel) {
      // The keys' keyspace channels are subscribed whatever the server's setting says (it may
      // be unreadable, or changed later): with notifications off they are merely silent.
      const db = Number(this.#client.options?.db ?? 0)
      channel = {
        listeners: new Set(),
        names: [name, ...keyspaceChannels(this.prefix, resource, db)],
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
    const stop = (lingerMs: number) => {
      if (!ch.listeners.delete(entry) || ch.listeners.size > 0 || this.#gate.closing) return
      if (lingerMs === 0) return this.#unsubscribe(subscriber, ch, name)
      ch.linger = setTimeout(() => void this.#unsubscribe(subscriber, ch, name), lingerMs)
      ch.linger.unref()
    }
    try {
      ch.subscribed ??= this.#subscribe(subscriber, ch)
      await this.#timed('watch', () => ch.subscribed!, 'subscriber')
    } catch (error) {
      await stop(0)
      throw error
    }
    const unwatch: Unwatch = async () => stop(this.lingerMs)
    return unwatch
  }

  onClose(hook: () => Promise<void>): () => void {
    return this.#gate.onClose(hook)
  }

  /**
   * Runs the onClose hooks first (the election core ends its terms and releases their grants
   * there, while calls still work), then drops the subscriber connection, and the client when
   * the backend made it. Idempotent; every call after it fails with a BackendClosedError.
   */
  close(): Promise<void> {
    return this.#gate.close(async () => {
      for (const ch of this.#channels.values()) clearTimeout(ch.linger)
      this.#channels.clear()
      this.#routes.clear()
      clearInterval(this.#heartbeat)
      this.#subscriber?.disconnect()
      if (this.#owned) this.#client.disconnect()
    })
  }

  /** The one subscriber connection of this backend, made on first watch. */
  #subscriberConnection(): Redis {
    this.#checkOpen()
    if (this.#subscriber) return this.#subscriber
    const client = this.#client
    // Our own resubscribe (not ioredis's) so we know when it is confirmed and can then wake
    // every watcher: a release may have been published while we were disconnected.
    const subscriber = client.duplicate({
      autoResubscribe: false,
      enableOfflineQueue: true,
      lazyConnect: false,
      commandTimeout: client.options.commandTimeout ?? OWNED_CLIENT_DEFAULTS.commandTimeout,
      maxRetriesPerRequest: 1,
      // A PING (or SUBSCRIBE) unanswered this long: ioredis drops the socket and reconnects.
      socketTimeout: this.heartbeatMs,
    })
    this.#subscriber = subscriber
    this.#heartbeat = setInterval(() => {
      if (subscriber.status === 'ready') subscriber.ping().catch(noop)
    }, this.heartbeatMs)
    this.#heartbeat.unref()
    // Reported through failed watches, as their cause; ioredis reconnects.
    subscriber.on('error', (error: Error) => (this.#subscriberError = error))
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
        notify(ch.listeners)
      })
    })
    let connectedBefore = false
    subscriber.on('ready', () => {
      this.#subscriberError = undefined
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
    if (this.#gate.closing) return
    for (const [, ch] of channels) notify(ch.listeners)
  }

  /**
   * Queued behind this channel's earlier SUBSCRIBE and ahead of any later one, so a watch made
   * meanwhile is not undone. Best effort: a failed UNSUBSCRIBE only leaves a channel whose
   * messages nobody hears.
   */
  async #unsubscribe(subscriber: Redis, ch: Channel, name: string): Promise<void> {
    ch.linger = undefined
    if (ch.listeners.size > 0 || this.#gate.closing) return
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
    const where = endpoint(this.#client)
    let flags: string | undefined
    let unreadable: string | undefined
    try {
      const reply = await this.#timed('config get', () =>
        this.#client.config('GET', 'notify-keyspace-events'),
      )
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

  async #run(what: string, script: Script, [keys, args]: Call): Promise<Reply> {
    return this.#timed(what, async () => {
      const client = this.#client
      try {
        return await client.evalsha(script.sha, keys.length, ...keys, ...args)
      } catch (error) {
        if (!isNoScript(error)) throw error
        // Not cached on this server (restart, failover, SCRIPT FLUSH): EVAL also caches it.
        return await client.eval(script.source, keys.length, ...keys, ...args)
      }
    })
  }

  /**
   * Runs `fn`, turning failures and a missing answer after timeoutMs into a BackendError that
   * names the server and keeps the real error as its cause: for a failure of the connection
   * (refused, TLS, DNS...) that is the connection's own error, which ioredis only emits.
   */
  async #timed<T>(
    what: string,
    fn: () => Promise<T>,
    connection: 'client' | 'subscriber' = 'client',
  ): Promise<T> {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new TimedOut()), this.timeoutMs)
      timer.unref()
    })
    try {
      return await Promise.race([fn(), timeout])
    } catch (error) {
      // A call cut short by close() (its connection dropped) gets the final error.
      this.#gate.check()
      if (error instanceof ConclaveError) throw error
      const where = endpoint(this.#client)
      // A reply is the server's own answer; anything else may be the connection failing.
      const down =
        error instanceof Error && error.name === 'ReplyError'
          ? undefined
          : connection === 'client'
            ? this.#clientError
            : this.#subscriberError
      if (error instanceof TimedOut) {
        throw new BackendError(
          `redis ${what} on ${where}: no answer within ${this.timeoutMs} ms${down ? ` (the connection: ${down.message})` : ''}`,
          { code: 'ERR_CONCLAVE_TIMEOUT', ...(down && { cause: down }) },
        )
      }
      const cause = down ?? error
      throw new BackendError(`redis ${what} on ${where} failed: ${messageOf(cause)}`, { cause })
    } finally {
      clearTimeout(timer)
    }
  }

  #checkOpen(): void {
    this.#gate.check()
  }
}

type Call = [keys: string[], args: string[]]

/** What #timed's timer rejects with (replaced by a BackendError naming the server). */
class TimedOut extends Error {}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message || error.name : String(error)
}

/** Where a client connects, for messages: host:port or the socket path (never a password). */
function endpoint(client: Redis): string {
  const { host, port, path, sentinels, name } = client.options ?? {}
  if (path) return path
  if (sentinels?.length)
    return `the master "${name}" of sentinels ${sentinels.map((s) => `${s.host ?? 'localhost'}:${s.port ?? 26379}`).join(',')}`
  const h = host ?? 'localhost'
  return `${h.includes(':') ? `[${h}]` : h}:${port ?? 6379}`
}

async function pipelined(
  client: Redis,
  script: Script,
  calls: Call[],
): Promise<[Error | null, unknown][]> {
  const pipeline = client.pipeline()
  for (const [keys, args] of calls) pipeline.evalsha(script.sha, keys.length, ...keys, ...args)
  const results = await pipeline.exec()
  if (!results) throw new Error('the pipeline was discarded')
  return results
}

function asArray(reply: Reply, what: string): unknown[] {
  if (!Array.isArray(reply))
    throw new BackendError(`redis ${what}: unexpected reply ${typeof reply}`)
  return reply
}

function parseHolders(list: unknown[], from: number): Holder[] {
  const holders: Holder[] = []
  for (let i = from; i + 3 < list.length; i += 4) {
    holders.push({
      candidate: String(list[i]),
      token: Number(list[i + 1]),
      metadata: JSON.parse(String(list[i + 2])) as Json,
      remainingMs: Math.max(0, Number(list[i + 3])),
    })
  }
  return holders.sort((a, b) => a.token - b.token)
}

function notify(listeners: Set<() => void>): void {
  for (const fn of [...listeners]) {
    queueMicrotask(() => {
      try {
        fn()
      } catch {
        // A watcher's own failure is its business; the others still hear the change.
      }
    })
  }
}

function noop(): void {}

function looksLikeIoredis(client: unknown): client is Redis {
  if (typeof client !== 'object' || client === null) return false
  const c = client as Record<string, unknown>
  return (
    !c.isCluster &&
    ['evalsha', 'eval', 'pipeline', 'duplicate', 'script'].every((m) => typeof c[m] === 'function')
  )
}

/** ioredis, loaded when the backend makes its own client (it is an optional peer dependency). */
function loadIoredis(): typeof import('ioredis') {
  try {
    return createRequire(import.meta.url)('ioredis') as typeof import('ioredis')
  } catch (error) {
    const code = (error as { code?: unknown } | null)?.code
    if (code === 'MODULE_NOT_FOUND' || code === 'ERR_MODULE_NOT_FOUND') {
      throw new MissingPeerError('ioredis', 'redisBackend({ url })', { cause: error })
    }
    throw error
  }
}

/** Query parameters of a Redis URL that conclave reads itself (ioredis never sees them). */
const URL_SETTINGS = ['startupGrace', 'prefix'] as const

/** Query parameters ioredis reads from a URL as plain text: passed on untouched. */
const IOREDIS_URL_PARAMS = ['db', 'family', 'username', 'password', 'connectionName'] as const

/** A query parameter whose value must not be echoed. */
const SECRET_NAME = /pass|secret|auth|token|key/i

const URL_RULE = 'A Redis URL is redis://[user:password@]host[:port][/db] or rediss://... for TLS.'

/** The settings a Redis URL carries, and the URL to give ioredis. */
export interface RedisUrlSettings {
  /** The URL without conclave's parameters: exactly as given when it had none. */
  url: string
  /** `?startupGrace=true|false`, when given. */
  startupGrace?: boolean
  /** `?prefix=...`, when given (checked by the backend's prefix rule). */
  prefix?: string
}

/**
 * Checks a `redis://` / `rediss://` URL and takes conclave's parameters (`startupGrace`,
 * `prefix`) out of it; any other parameter but those ioredis reads as text (`db`, `family`,
 * `username`, `password`, `connectionName`) is refused with an OptionsError naming it.
 */
export function parseRedisUrl(url: unknown, field = 'url'): RedisUrlSettings {
  let parsed: URL | undefined
  try {
    parsed = typeof url === 'string' ? new URL(url) : undefined
  } catch {
    parsed = undefined
  }
  if (
    typeof url !== 'string' ||
    !parsed ||
    (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') ||
    !parsed.hostname
  ) {
    throw new OptionsError(field, typeof url === 'string' ? redactUrl(url) : url, URL_RULE)
  }
  const settings: Omit<RedisUrlSettings, 'url'> = {}
  const seen = new Set<string>()
  for (const [name, value] of parsed.searchParams) {
    if ((URL_SETTINGS as readonly string[]).includes(name)) {
      if (seen.has(name)) {
        throw new OptionsError(name, value, `${name} is given twice in the Redis URL.`)
      }
      seen.add(name)
      if (name === 'prefix') settings.prefix = value
      else if (value === 'true' || value === 'false') settings.startupGrace = value === 'true'
      else {
        throw new OptionsError(
          name,
          value,
          'startupGrace in a Redis URL is true or false (e.g. redis://host:6379?startupGrace=false).',
        )
      }
    } else if (!(IOREDIS_URL_PARAMS as readonly string[]).includes(name)) {
      throw new OptionsError(
        name,
        SECRET_NAME.test(name) ? '***' : value,
        `Unknown Redis URL parameter. Known: ${URL_SETTINGS.join(', ')} (conclave's) and ${IOREDIS_URL_PARAMS.join(', ')} (passed to ioredis).`,
      )
    }
  }
  if (seen.size === 0) return { url }
  // Only conclave's parameters are cut out of the text; the rest reaches ioredis as written.
  const query = url.indexOf('?')
  const hash = url.indexOf('#', query)
  const end = hash < 0 ? url.length : hash
  const kept = url
    .slice(query + 1, end)
    .split('&')
    .filter((piece) => !seen.has(decodeQueryPart(piece.split('=')[0]!)))
  return {
    url: `${url.slice(0, query)}${kept.length > 0 ? `?${kept.join('&')}` : ''}${url.slice(end)}`,
    ...settings,
  }
}

/** A query key or value as URLSearchParams reads it. */
function decodeQueryPart(text: string): string {
  try {
    return decodeURIComponent(text.replace(/\+/g, ' '))
  } catch {
    return text
  }
}

/**
 * A URL fit for messages: its password replaced with `***` (`redis://user:***@host:6379`), and
 * so is the value of a query parameter named like a secret (`?password=***`). A URL that does
 * not parse loses everything up to its last `@`, whatever it was.
 */
export function redactUrl(url: string): string {
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(url)?.[0]
  if (scheme === undefined) return url
  let rest = url.slice(scheme.length)
  let parses = true
  try {
    new URL(url)
  } catch {
    parses = false
  }
  // The userinfo ends at the last @ of the authority (which ends at the first / ? #).
  const authority = parses ? rest.slice(0, rest.search(/[/?#]|$/)) : rest
  const at = authority.lastIndexOf('@')
  if (at >= 0) {
    const colon = authority.indexOf(':')
    // A user name alone stays (ioredis reads it as one), unless the URL is malformed.
    if (colon >= 0 && colon < at) rest = `${authority.slice(0, colon)}:***${rest.slice(at)}`
    else if (!parses) rest = `***${rest.slice(at)}`
  }
  return (
    scheme + rest.replace(/([?&][^=&#]*(?:pass|secret|auth|token|key)[^=&#]*=)[^&#]*/gi, '$1***')
  )
}

/** Makes a Redis backend: `{ client }` (your ioredis client) or `{ url }` (its own). */
export function redisBackend(options: RedisBackendOptions): RedisBackend {
  return new RedisBackend(options)
}

/**
 * `redis://...` or `rediss://...`: a backend that owns (and closes) its own client. The query
 * parameters `startupGrace=false` and `prefix=...` set those options; ioredis gets the URL
 * without them (exactly as given when it has none).
 */
export async function backendFromUrl(url: string): Promise<RedisBackend> {
  return new RedisBackend({ url })
}
