/**
 * The one place where the Redis client libraries differ: the backend talks to a
 * RedisConnection, made here from an ioredis client (Redis or Cluster) or a node-redis client
 * (`createClient()` of the `redis` package, v4 to v6). Everything the backend sends (scripts,
 * pipelines with WAIT, TIME, HMGET, CONFIG GET) and its subscriber connections go through it.
 *
 * Neither library is imported here (both are optional peers): node-redis is described by the
 * methods used (NodeRedisClient), so its types are not needed to compile against conclave.
 * node-redis' Cluster, Sentinel and pool clients are refused (OptionsError): their commands may
 * reach another connection than the WAIT that follows them, and the backend's per-master
 * subscribers are built on ioredis' slot map.
 */
import type { Cluster, Redis } from 'ioredis'
import { OptionsError } from '../../errors.js'
import type { PipelineClient, ScriptClient } from './scripts.js'

/**
 * A node-redis client (`createClient()` of `redis` v4, v5 or v6), by the methods the backend
 * calls: structural, so ioredis users need no node-redis types. Connect it yourself
 * (`await client.connect()`) and give it an `'error'` listener; close() leaves it open.
 */
export interface NodeRedisClient {
  /** Sends one raw command: the backend sends every command this way. */
  sendCommand(...args: never[]): Promise<unknown>
  /** Makes the subscriber connection (same server, credentials, TLS). */
  duplicate(...args: never[]): unknown
  /** node-redis' connect (the backend's subscriber connections are connected by it). */
  connect(): Promise<unknown>
  /** False until connect() is called, and after the client was closed. */
  readonly isOpen: boolean
}

/** The node-redis client methods the adapter uses, typed for its own calls. */
interface NodeRedisImpl {
  sendCommand(args: (string | Buffer)[]): Promise<unknown>
  duplicate(overrides?: Record<string, unknown>): NodeRedisImpl
  connect(): Promise<unknown>
  subscribe(channels: string[], listener: (message: string, channel: string) => void): Promise<void>
  unsubscribe(
    channels: string[],
    listener: (message: string, channel: string) => void,
  ): Promise<void>
  on(event: string, listener: (...args: never[]) => void): unknown
  readonly isOpen: boolean
  readonly isReady: boolean
  readonly options?: {
    socket?: { host?: string; port?: number; path?: string; [name: string]: unknown }
    database?: number
    legacyMode?: boolean
  }
  destroy?(): void
  disconnect?(): Promise<void>
}

/** Every client redisBackend({ client }) takes. */
export type RedisClientInput = Redis | Cluster | NodeRedisClient

/** A subscriber connection, whatever the library: it reconnects by itself, without resubscribing. */
export interface SubscriberConnection {
  /** Connected and ready for commands. */
  readonly ready: boolean
  subscribe(channels: readonly string[]): Promise<void>
  unsubscribe(channels: readonly string[]): Promise<void>
  /** A heartbeat: an answer that takes longer than the heartbeat replaces the connection. */
  ping(): Promise<unknown>
  /** A message on a subscribed channel. */
  on(event: 'message', listener: (channel: string, message: string) => void): void
  /** Connected (again): a new connection has no subscriptions. */
  on(event: 'ready', listener: () => void): void
  on(event: 'error', listener: (error: Error) => void): void
  on(event: 'close', listener: () => void): void
  disconnect(): void
}

/** What the subscriber connections are made with. */
export interface SubscriberSettings {
  /** PING interval and answer deadline: a hung path is replaced after this long. */
  heartbeatMs: number
  /** Each subscriber command's deadline when the client says none. */
  defaultCommandTimeoutMs: number
}

/** The backend's view of its client: every library difference is behind these members. */
export interface RedisConnection {
  /** Which library the client is from. */
  readonly library: 'ioredis' | 'node-redis'
  /** The ioredis Cluster client, when it is one (its slot map serves the Cluster code paths). */
  readonly cluster: Cluster | undefined
  /** Scripts and pipelines, with ioredis' shape (scripts.ts). */
  readonly commands: ScriptClient & PipelineClient
  hmget(key: string, ...fields: string[]): Promise<unknown>
  /** TIME: [seconds, microseconds]. */
  time(): Promise<unknown>
  /** CONFIG GET of one setting, as [name, value] (RESP2's shape, whatever the protocol). */
  configGet(name: string): Promise<unknown>
  /** Where it connects, for messages (never a password). */
  endpoint(): string
  /** The database its keys are in (keyspace channels name it); 0 on a Cluster. */
  readonly db: number
  /** A new subscriber connection to the standalone (or Sentinel-found) server. */
  subscriber(settings: SubscriberSettings): SubscriberConnection
  /** Drops the client (only for a client the backend made). */
  disconnect(): void
}

/** An ioredis Redis or Cluster, by the methods the backend calls. */
export function looksLikeIoredis(client: unknown): client is Redis | Cluster {
  if (typeof client !== 'object' || client === null) return false
  const c = client as Record<string, unknown>
  return ['evalsha', 'eval', 'pipeline', 'duplicate', 'script'].every(
    (m) => typeof c[m] === 'function',
  )
}

/** A node-redis client of any kind (plain, Cluster, Sentinel, pool), by sendCommand and connect. */
export function looksLikeNodeRedis(client: unknown): client is NodeRedisClient {
  if (typeof client !== 'object' || client === null || looksLikeIoredis(client)) return false
  const c = client as Record<string, unknown>
  return typeof c.sendCommand === 'function' && typeof c.connect === 'function'
}

/**
 * Refuses, with an OptionsError naming `client`, a node-redis client the backend cannot use:
 * a Cluster, a Sentinel, a pool, legacy mode, or one not connected.
 */
export function checkNodeRedisClient(client: NodeRedisClient): void {
  const c = client as unknown as Record<string, unknown>
  const refuse = (kind: string, rule: string): never => {
    throw new OptionsError('client', kind, rule)
  }
  if (typeof c.getSlotMaster === 'function' || Array.isArray(c.masters))
    refuse(
      'a node-redis Cluster client',
      'A node-redis Cluster client (createCluster) is not supported: give an ioredis Cluster client (new Cluster([...])) or a redis+cluster:// URL; see docs/redis.md, node-redis.',
    )
  if (typeof c.getMasterNode === 'function' || typeof c.getSentinelNode === 'function')
    refuse(
      'a node-redis Sentinel client',
      'A node-redis Sentinel client (createSentinel) is not supported: give an ioredis client with sentinels or a redis+sentinel:// URL; see docs/redis.md, node-redis.',
    )
  if (typeof c.duplicate !== 'function' || typeof c.execute === 'function')
    refuse(
      'a node-redis pool',
      'A node-redis pool (createClientPool) is not supported: a WAIT must follow its grant on the same connection. Give a client of createClient().',
    )
  if ((client as unknown as NodeRedisImpl).options?.legacyMode)
    refuse(
      'a node-redis client in legacyMode',
      'A node-redis client in legacyMode is not supported: give one without legacyMode.',
    )
  if (!client.isOpen)
    refuse(
      'a node-redis client not connected',
      'The node-redis client is not connected: call `await client.connect()` before redisBackend({ client }).',
    )
}

/** The connection for a client (already checked by resolveRedisOptions). */
export function connectionOf(client: RedisClientInput): RedisConnection {
  return looksLikeIoredis(client)
    ? new IoredisConnection(client)
    : new NodeRedisConnection(client as unknown as NodeRedisImpl)
}

// --- ioredis ---------------------------------------------------------------------------------

/** Where an ioredis client connects, for messages: host:port or the socket path (never a password). */
export function ioredisEndpoint(client: Redis | Cluster): string {
  if (client.isCluster) {
    const nodes = (client as Cluster)
      .nodes('master')
      .map((n) => `${n.options.host}:${n.options.port}`)
    return `the Redis Cluster${nodes.length ? ` of masters ${nodes.join(',')}` : ''}`
  }
  const { host, port, path, sentinels, name } = (client as Redis).options ?? {}
  if (path) return path
  if (sentinels?.length)
    return `the master "${name}" of sentinels ${sentinels.map((s) => `${s.host ?? 'localhost'}:${s.port ?? 26379}`).join(',')}`
  return hostPort(host, port)
}

function hostPort(host: string | undefined, port: number | undefined): string {
  const h = host ?? 'localhost'
  return `${h.includes(':') ? `[${h}]` : h}:${port ?? 6379}`
}

/** The commandTimeout an ioredis Redis or Cluster client was made with. */
function commandTimeoutOf(client: Redis | Cluster): number | undefined {
  return client.isCluster
    ? (client as Cluster).options.redisOptions?.commandTimeout
    : (client as Redis).options.commandTimeout
}

class IoredisConnection implements RedisConnection {
  readonly library = 'ioredis'
  readonly cluster: Cluster | undefined
  readonly commands: ScriptClient & PipelineClient
  readonly #client: Redis | Cluster

  constructor(client: Redis | Cluster) {
    this.#client = client
    this.cluster = client.isCluster ? (client as Cluster) : undefined
    this.commands = client
  }
  get db(): number {
    return this.cluster ? 0 : Number((this.#client as Redis).options?.db ?? 0)
  }
  hmget(key: string, ...fields: string[]): Promise<unknown> {
    return this.#client.hmget(key, ...fields)
  }
  time(): Promise<unknown> {
    return this.#client.time()
  }
  configGet(name: string): Promise<unknown> {
    return this.#client.config('GET', name)
  }
  endpoint(): string {
    return ioredisEndpoint(this.#client)
  }
  subscriber(settings: SubscriberSettings): SubscriberConnection {
    return ioredisSubscriber(
      (this.#client as Redis).duplicate(ioredisSubscriberOptions(this.#client, settings)),
    )
  }
  disconnect(): void {
    this.#client.disconnect()
  }
}

/**
 * The ioredis options of a subscriber connection: our own resubscribe (not ioredis's), so we
 * know when it is confirmed and can then wake every watcher; a PING (or SUBSCRIBE) unanswered
 * for a heartbeat drops the socket (socketTimeout), and ioredis reconnects.
 */
export function ioredisSubscriberOptions(client: Redis | Cluster, settings: SubscriberSettings) {
  return {
    autoResubscribe: false,
    enableOfflineQueue: true,
    lazyConnect: false,
    commandTimeout: commandTimeoutOf(client) ?? settings.defaultCommandTimeoutMs,
    maxRetriesPerRequest: 1,
    socketTimeout: settings.heartbeatMs,
  }
}

/** An ioredis connection (made with ioredisSubscriberOptions) as a SubscriberConnection. */
export function ioredisSubscriber(redis: Redis): SubscriberConnection {
  return {
    get ready() {
      return redis.status === 'ready'
    },
    subscribe: async (channels) => {
      await redis.subscribe(...channels)
    },
    unsubscribe: async (channels) => {
      await redis.unsubscribe(...channels)
    },
    ping: () => redis.ping(),
    on: (event: string, listener: (...args: never[]) => void) => {
      redis.on(event, listener as (...args: unknown[]) => void)
    },
    disconnect: () => redis.disconnect(),
  }
}

// --- node-redis ------------------------------------------------------------------------------

/**
 * A node-redis server reply (ErrorReply, or v5's SimpleError/BlobError under it), as opposed to
 * a connection failure. Told by class name: the classes are node-redis', not importable here.
 */
function isNodeRedisReply(error: unknown): error is Error {
  for (let p: unknown = error; p !== null && typeof p === 'object'; p = Object.getPrototypeOf(p)) {
    if ((p as { constructor?: { name?: string } }).constructor?.name === 'ErrorReply') return true
  }
  return false
}

/**
 * A server's error reply, named as ioredis names it (`ReplyError`), so the backend tells a
 * reply from a connection failure the same way for both libraries; the message is the server's.
 */
class ReplyError extends Error {
  override readonly name = 'ReplyError'
}

/** node-redis takes strings and Buffers only. */
function arg(value: string | number | Buffer): string | Buffer {
  return typeof value === 'number' ? String(value) : value
}

class NodeRedisConnection implements RedisConnection {
  readonly library = 'node-redis'
  readonly cluster = undefined
  readonly commands: ScriptClient & PipelineClient
  readonly #client: NodeRedisImpl

  constructor(client: NodeRedisImpl) {
    this.#client = client
    const send = (args: (string | number | Buffer)[]) => this.#send(args)
    this.commands = {
      evalsha: (sha, numKeys, ...rest) => send(['EVALSHA', sha, numKeys, ...rest]),
      eval: (source, numKeys, ...rest) => send(['EVAL', source, numKeys, ...rest]),
      script: (subcommand, source) => send(['SCRIPT', subcommand, source]),
      pipeline: () => {
        const queued: (string | number | Buffer)[][] = []
        const pipeline = {
          evalsha: (sha: string, numKeys: number, ...rest: (string | number | Buffer)[]) =>
            queued.push(['EVALSHA', sha, numKeys, ...rest]),
          eval: (source: string, numKeys: number, ...rest: (string | number | Buffer)[]) =>
            queued.push(['EVAL', source, numKeys, ...rest]),
          call: (command: string, ...rest: (string | number)[]) => queued.push([command, ...rest]),
          // Sent together, in order, on the client's one connection (node-redis writes the
          // commands of one tick at once): one round trip, and a WAIT counts the writes before it.
          exec: async (): Promise<[Error | null, unknown][]> => {
            const settled = await Promise.allSettled(queued.map((command) => send(command)))
            return settled.map((s) =>
              s.status === 'fulfilled' ? [null, s.value] : [s.reason as Error, undefined],
            )
          },
        }
        return pipeline
      },
    }
  }
  get db(): number {
    return Number(this.#client.options?.database ?? 0)
  }
  async #send(args: (string | number | Buffer)[]): Promise<unknown> {
    try {
      return await this.#client.sendCommand(args.map(arg))
    } catch (error) {
      if (isNodeRedisReply(error)) throw new ReplyError(error.message, { cause: error })
      throw error
    }
  }
  hmget(key: string, ...fields: string[]): Promise<unknown> {
    return this.#send(['HMGET', key, ...fields])
  }
  time(): Promise<unknown> {
    return this.#send(['TIME'])
  }
  async configGet(name: string): Promise<unknown> {
    const reply = await this.#send(['CONFIG', 'GET', name])
    // RESP3 answers a map (an object or a Map, by the client's type mapping).
    if (reply instanceof Map) return [...reply].flat()
    if (reply !== null && typeof reply === 'object' && !Array.isArray(reply))
      return Object.entries(reply).flat()
    return reply
  }
  endpoint(): string {
    const socket = this.#client.options?.socket
    return socket?.path ?? hostPort(socket?.host, socket?.port)
  }
  subscriber(settings: SubscriberSettings): SubscriberConnection {
    return new NodeRedisSubscriber(this.#client, settings.heartbeatMs)
  }
  disconnect(): void {
    closeNodeRedis(this.#client)
  }
}

/**
 * Closes a node-redis client at once: destroy() in v5+, disconnect() in v4. Either refuses a
 * client that closed itself already (v5 by throwing, v4 by rejecting): nothing left to close.
 */
function closeNodeRedis(client: NodeRedisImpl): void {
  try {
    if (typeof client.destroy === 'function') client.destroy()
    else client.disconnect?.().catch(noop)
  } catch {
    // Closed already.
  }
}

/** The reconnect backoff of a subscriber connection (as ioredis' default). */
const reconnectDelay = (attempt: number): number => Math.min(attempt * 50, 2_000)

/**
 * A node-redis subscriber that reconnects by replacement: each connection is a duplicate of the
 * client with node-redis' own reconnect off (which would resubscribe before we knew), so a new
 * connection starts with no subscriptions, as ioredis' with autoResubscribe off: the wake-ups
 * resubscribe and then wake every watcher. A PING unanswered for a heartbeat replaces it too.
 */
class NodeRedisSubscriber implements SubscriberConnection {
  readonly #base: NodeRedisImpl
  readonly #heartbeatMs: number
  readonly #listeners = new Map<string, ((...args: never[]) => void)[]>()
  #current: NodeRedisImpl | undefined
  #ready = false
  #closed = false
  #attempt = 0
  #retry: NodeJS.Timeout | undefined
  readonly #onMessage = (message: string, channel: string) =>
    this.#emit('message', channel, message)

  constructor(base: NodeRedisImpl, heartbeatMs: number) {
    this.#base = base
    this.#heartbeatMs = heartbeatMs
    this.#open()
  }

  get ready(): boolean {
    return this.#ready
  }

  on(event: string, listener: (...args: never[]) => void): void {
    const list = this.#listeners.get(event)
    if (list) list.push(listener)
    else this.#listeners.set(event, [listener])
  }

  #emit(event: string, ...args: unknown[]): void {
    for (const listener of this.#listeners.get(event) ?? [])
      (listener as (...a: unknown[]) => void)(...args)
  }

  #open(): void {
    if (this.#closed) return
    const socket = this.#base.options?.socket ?? {}
    const connection = this.#base.duplicate({ socket: { ...socket, reconnectStrategy: false } })
    this.#current = connection
    connection.on('error', (error: Error) => {
      if (this.#current !== connection) return
      this.#emit('error', error)
      if (!connection.isOpen) this.#replace()
    })
    connection.on('end', () => {
      if (this.#current === connection) this.#replace()
    })
    connection.connect().then(
      () => {
        if (this.#current !== connection || this.#closed) return
        this.#attempt = 0
        this.#ready = true
        this.#emit('ready')
      },
      (error: unknown) => {
        if (this.#current !== connection) return
        if (error instanceof Error) this.#emit('error', error)
        this.#replace()
      },
    )
  }

  /** Drops the current connection and opens another after the backoff. */
  #replace(): void {
    const old = this.#current
    this.#current = undefined
    this.#ready = false
    if (old) closeNodeRedis(old)
    if (this.#closed || this.#retry) return
    this.#emit('close')
    this.#retry = setTimeout(() => {
      this.#retry = undefined
      this.#open()
    }, reconnectDelay(++this.#attempt))
    this.#retry.unref()
  }

  #connection(): NodeRedisImpl {
    if (!this.#current) throw new Error('the subscriber connection is reconnecting')
    return this.#current
  }

  async subscribe(channels: readonly string[]): Promise<void> {
    await this.#connection().subscribe([...channels], this.#onMessage)
  }

  async unsubscribe(channels: readonly string[]): Promise<void> {
    // With our listener: node-redis drops it and, the channel left with none, UNSUBSCRIBEs.
    await this.#connection().unsubscribe([...channels], this.#onMessage)
  }

  async ping(): Promise<unknown> {
    const connection = this.#connection()
    let timer: NodeJS.Timeout | undefined
    const hung = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const error = new Error(`no answer to PING within ${this.#heartbeatMs} ms`)
        if (this.#current === connection) {
          this.#emit('error', error)
          this.#replace()
        }
        reject(error)
      }, this.#heartbeatMs)
      timer.unref()
    })
    try {
      return await Promise.race([connection.sendCommand(['PING']), hung])
    } finally {
      clearTimeout(timer)
    }
  }

  disconnect(): void {
    this.#closed = true
    clearTimeout(this.#retry)
    this.#retry = undefined
    const current = this.#current
    this.#current = undefined
    this.#ready = false
    if (current) closeNodeRedis(current)
  }
}

function noop(): void {}
