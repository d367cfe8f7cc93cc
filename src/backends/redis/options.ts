/**
 * Options of the Redis backend: what they are, their defaults, the rules they must follow
 * (checked up front, so a typo never falls back to a default), and the backend URL, parsed here
 * into the same options. A password in a URL never reaches a message.
 */
import { readFileSync } from 'node:fs'
import type { RedisOptions } from 'ioredis'
import { OptionsError } from '../../errors.js'
import {
  checkNodeRedisClient,
  looksLikeIoredis,
  looksLikeNodeRedis,
  type RedisClientInput,
} from './client.js'
import { checkMaxLeaseMs, checkOptions, optionalMilliseconds } from '../../validate.js'

/** What redisBackend() takes: your client or a URL, the key prefix, and the timings. */
export interface RedisBackendOptions {
  /**
   * Your client, left open by close(): an ioredis `Redis` or `Cluster` (give it
   * `commandTimeout`, and to notice a hung path sooner `socketTimeout`, so a command fails
   * instead of waiting forever), or a node-redis client (`createClient()` of `redis` v4 to v6,
   * connected: `await client.connect()`). node-redis' Cluster, Sentinel and pool clients are
   * refused; see docs/redis.md, node-redis.
   */
  client?: RedisClientInput
  /**
   * Or a `redis://` / `rediss://` URL: the backend makes its own client and closes it. Its
   * query may set `prefix`, `startupGrace`, `failoverGrace`, `maxLeaseMs`, `replicas`,
   * `replicaTimeoutMs`, and ioredis' `db`, `family`, `username`, `password`, `connectionName`; any other parameter
   * is refused. Or `redis+sentinel://[user:password@]host:port,host:port/mastername[?...]`: the
   * master Sentinel names (see parseRedisUrl).
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
  /**
   * After the server the backend talks to changed its replication history (a replica promoted
   * by Sentinel or by hand, which may lack the latest grants: replication is asynchronous), it
   * grants no new ticket for one lease from when conclave first saw the change (renewals of the
   * grants it has go on). An ordinary reconnect to the same master changes nothing. Default
   * true. It lasts `maxLeaseMs`, not the asking candidate's lease. See docs/redis.md.
   */
  failoverGrace?: boolean
  /**
   * The longest lease any candidate of this Redis uses: the same on every candidate's backend.
   * The failover grace lasts this long, whatever lease the asking candidate has, because the
   * grant a promoted replica missed may be another candidate's longer one; and an acquire or
   * renewal with a longer lease is refused (an OptionsError), so no grant outlives a grace.
   * Given, the startup grace lasts it too (not given, the startup grace is the asking lease,
   * so a fresh server waits only a lease + 1 s: give it when candidates use different leases).
   * Default 60000.
   */
  maxLeaseMs?: number
  /**
   * A grant or renewal counts only once this many replicas acknowledged it (`WAIT` in the same
   * round trip): a renewal they did not acknowledge in time fails (the term's deadline does not
   * move), a grant fails and is retried. With Sentinel, 1 or more makes a promoted replica hold
   * every grant its holder believes in. Default 0 (no wait).
   */
  replicas?: number
  /** How long WAIT waits for `replicas` acknowledgements, in ms. Default 500. */
  replicaTimeoutMs?: number
}

/** The options checked, with the defaults filled in (each as its option says). */
export interface ResolvedRedisOptions {
  prefix: string
  timeoutMs: number
  lingerMs: number
  heartbeatMs: number
  startupGrace: boolean
  failoverGrace: boolean
  maxLeaseMs: number
  /** Whether maxLeaseMs was given (option or URL): only then does the startup grace last it. */
  maxLeaseMsGiven: boolean
  replicas: number
  replicaTimeoutMs: number
  /** Your client, or undefined when the backend makes its own from `url`. */
  client: RedisClientInput | undefined
  /** Without your client: the URL for ioredis (conclave's parameters cut out). */
  url: string | undefined
  /** Without your client, from a `redis+sentinel://` URL: the ioredis options to connect with. */
  sentinel: SentinelClientOptions | undefined
  /** Without your client, from a `redis+cluster://` URL: the nodes and credentials. */
  cluster: ClusterClientOptions | undefined
  /** Without your client: the options it is made with (merged over the defaults later). */
  clientOptions: RedisOptions | undefined
}

/** Defaults for a client the backend makes: fail fast instead of queueing while disconnected. */
export const OWNED_CLIENT_DEFAULTS: Readonly<RedisOptions> = Object.freeze({
  commandTimeout: 2_000,
  socketTimeout: 3_000,
  connectTimeout: 2_000,
  maxRetriesPerRequest: 1,
  retryStrategy: (times: number) => Math.min(times * 100, 1_000),
})

/** Where keys and channels live when no prefix is given. */
export const DEFAULT_PREFIX = 'conclave:'
/** The call deadline when none is given. */
export const DEFAULT_TIMEOUT_MS = 5_000
/** How long an unwatched channel stays subscribed when no lingerMs is given. */
export const DEFAULT_LINGER_MS = 10_000
/** The subscriber's PING interval (and answer deadline) when no heartbeatMs is given. */
export const DEFAULT_HEARTBEAT_MS = 5_000
/** How long WAIT waits for the replicas' acknowledgements when no replicaTimeoutMs is given. */
export const DEFAULT_REPLICA_TIMEOUT_MS = 500

const OPTION_NAMES = [
  'client',
  'url',
  'clientOptions',
  'prefix',
  'timeoutMs',
  'lingerMs',
  'heartbeatMs',
  'startupGrace',
  'failoverGrace',
  'maxLeaseMs',
  'replicas',
  'replicaTimeoutMs',
] as const

const PREFIX_RULE =
  'prefix must be 0 to 100 printable ASCII characters without spaces or braces ({ } would break the hash tag).'

/**
 * Checks every option and fills in the defaults, in the order a user fixes them: the shape, the
 * option names, where the client comes from, the URL, then each value, then the client itself.
 * Loads nothing: a client made from the URL is made by the backend once all of this passed.
 */
export function resolveRedisOptions(options: RedisBackendOptions): ResolvedRedisOptions {
  // Said here first, with what to give; checkOptions then refuses an array and unknown names.
  if (typeof options !== 'object' || options === null) {
    throw new OptionsError(
      'options',
      options,
      'redisBackend takes an object: { client } (an ioredis or node-redis client) or { url }.',
    )
  }
  checkOptions(options, OPTION_NAMES, 'redisBackend')
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
  // `=== undefined`, not `??`: a null is a value given, and refused by the rule.
  const prefix = options.prefix === undefined ? (fromUrl?.prefix ?? DEFAULT_PREFIX) : options.prefix
  if (typeof prefix !== 'string' || prefix.length > 100 || !/^[\x21-\x7a|~]*$/.test(prefix)) {
    throw new OptionsError('prefix', prefix, PREFIX_RULE)
  }
  const timeoutMs = optionalMilliseconds('timeoutMs', options.timeoutMs, DEFAULT_TIMEOUT_MS, 1)
  const lingerMs = optionalMilliseconds('lingerMs', options.lingerMs, DEFAULT_LINGER_MS, 0)
  const heartbeatMs = optionalMilliseconds(
    'heartbeatMs',
    options.heartbeatMs,
    DEFAULT_HEARTBEAT_MS,
    100,
  )
  const startupGrace =
    options.startupGrace === undefined ? (fromUrl?.startupGrace ?? true) : options.startupGrace
  if (typeof startupGrace !== 'boolean') {
    throw new OptionsError('startupGrace', startupGrace, 'startupGrace must be true or false.')
  }
  const failoverGrace =
    options.failoverGrace === undefined ? (fromUrl?.failoverGrace ?? true) : options.failoverGrace
  if (typeof failoverGrace !== 'boolean') {
    throw new OptionsError('failoverGrace', failoverGrace, 'failoverGrace must be true or false.')
  }
  const maxLeaseGiven = options.maxLeaseMs === undefined ? fromUrl?.maxLeaseMs : options.maxLeaseMs
  const maxLeaseMs = checkMaxLeaseMs(maxLeaseGiven)
  const replicas = options.replicas === undefined ? (fromUrl?.replicas ?? 0) : options.replicas
  if (
    typeof replicas !== 'number' ||
    !Number.isInteger(replicas) ||
    replicas < 0 ||
    replicas > 100
  ) {
    throw new OptionsError(
      'replicas',
      replicas,
      'replicas must be an integer from 0 to 100: how many replicas must acknowledge each grant and renewal.',
    )
  }
  const replicaTimeoutMs = optionalMilliseconds(
    'replicaTimeoutMs',
    options.replicaTimeoutMs ?? fromUrl?.replicaTimeoutMs,
    DEFAULT_REPLICA_TIMEOUT_MS,
    1,
  )
  if (clientOptions !== undefined && (typeof clientOptions !== 'object' || !url)) {
    throw new OptionsError(
      'clientOptions',
      clientOptions,
      'clientOptions is an object of ioredis options, and only goes with { url }.',
    )
  }
  if (client !== undefined && !looksLikeIoredis(client) && !looksLikeNodeRedis(client)) {
    throw new OptionsError(
      'client',
      client,
      'client must be an ioredis client (new Redis(...) or new Cluster(...)) or a node-redis client (createClient(), connected).',
    )
  }
  if (looksLikeNodeRedis(client)) checkNodeRedisClient(client)
  if (client === undefined && fromUrl === undefined) {
    throw new OptionsError(
      'client',
      client,
      'redisBackend needs { client } (an ioredis or node-redis client) or { url } (redis:// or rediss://).',
    )
  }
  return {
    prefix,
    timeoutMs,
    lingerMs,
    heartbeatMs,
    startupGrace,
    failoverGrace,
    maxLeaseMs,
    maxLeaseMsGiven: maxLeaseGiven !== undefined,
    replicas,
    replicaTimeoutMs,
    client,
    url: fromUrl?.sentinel || fromUrl?.cluster ? undefined : fromUrl?.url,
    sentinel: fromUrl?.sentinel,
    cluster: fromUrl?.cluster,
    clientOptions: withTlsCa(clientOptions, fromUrl?.tlsCa),
  }
}

/**
 * `?tlsCa=FILE` of a rediss:// URL: the PEM file of the CA certificates to trust, read once
 * here, added to the client's `tls` options (the rest of clientOptions.tls stays).
 */
function withTlsCa(
  clientOptions: RedisOptions | undefined,
  path: string | undefined,
): RedisOptions | undefined {
  if (path === undefined) return clientOptions
  let ca: string
  try {
    ca = readFileSync(path, 'utf8')
  } catch (error) {
    throw new OptionsError(
      'tlsCa',
      path,
      `tlsCa is the path of a PEM file of CA certificates to trust; it could not be read (${(error as NodeJS.ErrnoException).code ?? String(error)}).`,
    )
  }
  if (!ca.includes('-----BEGIN CERTIFICATE-----')) {
    throw new OptionsError('tlsCa', path, 'tlsCa is a PEM file: it holds no "BEGIN CERTIFICATE".')
  }
  return { ...clientOptions, tls: { ...clientOptions?.tls, ca } }
}

// --- URLs ------------------------------------------------------------------------------------

/** Query parameters of a Redis URL that conclave reads itself (ioredis never sees them). */
const URL_SETTINGS = [
  'startupGrace',
  'prefix',
  'failoverGrace',
  'maxLeaseMs',
  'replicas',
  'replicaTimeoutMs',
] as const

/** Query parameters of a rediss:// URL that conclave reads, and that are not options too. */
const TLS_URL_SETTINGS = ['tlsCa'] as const

/** Query parameters ioredis reads from a URL as plain text: passed on untouched. */
const IOREDIS_URL_PARAMS = ['db', 'family', 'username', 'password', 'connectionName'] as const

/**
 * A query parameter whose value must not be echoed. Wider than kit.ts's isSecretName (`auth`
 * too): an unknown Redis URL parameter is shown in the error that refuses it.
 */
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
  /** `?failoverGrace=true|false`, when given. */
  failoverGrace?: boolean
  /** `?maxLeaseMs=N`, when given (checked by the backend's rule). */
  maxLeaseMs?: number
  /** `?replicas=N`, when given (checked by the backend's rule). */
  replicas?: number
  /** `?replicaTimeoutMs=N`, when given (checked by the backend's rule). */
  replicaTimeoutMs?: number
  /** `?tlsCa=FILE` of a rediss:// URL: the PEM file of CA certificates to trust. */
  tlsCa?: string
  /** From a `redis+sentinel://` URL: the ioredis options that name the sentinels and master. */
  sentinel?: SentinelClientOptions
  /** From a `redis+cluster://` URL: the nodes to start from, and the credentials. */
  cluster?: ClusterClientOptions
}

/** What ioredis' `new Cluster(nodes, { redisOptions })` needs, from a `redis+cluster://` URL. */
export interface ClusterClientOptions {
  nodes: { host: string; port: number }[]
  username?: string
  password?: string
}

/** What ioredis needs to find a master through Sentinel (a subset of its RedisOptions). */
export interface SentinelClientOptions {
  sentinels: { host: string; port: number }[]
  /** The master's name, as the sentinels know it. */
  name: string
  db?: number
  username?: string
  password?: string
  sentinelUsername?: string
  sentinelPassword?: string
}

/**
 * Checks a `redis://` / `rediss://` URL and takes conclave's parameters (`startupGrace`,
 * `prefix`) out of it; any other parameter but those ioredis reads as text (`db`, `family`,
 * `username`, `password`, `connectionName`) is refused with an OptionsError naming it.
 */
export function parseRedisUrl(url: unknown, field = 'url'): RedisUrlSettings {
  if (typeof url === 'string' && /^redis\+sentinel:/i.test(url)) return parseSentinelUrl(url, field)
  if (typeof url === 'string' && /^redis\+cluster:/i.test(url)) return parseClusterUrl(url, field)
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
      readUrlSetting(settings, name as (typeof URL_SETTINGS)[number], value)
    } else if ((TLS_URL_SETTINGS as readonly string[]).includes(name)) {
      if (seen.has(name)) {
        throw new OptionsError(name, value, `${name} is given twice in the Redis URL.`)
      }
      if (parsed.protocol !== 'rediss:') {
        throw new OptionsError(
          name,
          value,
          `${name} goes with a rediss:// (TLS) URL; this one is ${parsed.protocol}//.`,
        )
      }
      if (value === '')
        throw new OptionsError(
          name,
          value,
          `${name} is a file path (?tlsCa=/etc/ssl/redis-ca.pem).`,
        )
      seen.add(name)
      settings.tlsCa = value
    } else if (!(IOREDIS_URL_PARAMS as readonly string[]).includes(name)) {
      throw new OptionsError(
        name,
        SECRET_NAME.test(name) ? '***' : value,
        `Unknown Redis URL parameter. Known: ${[...URL_SETTINGS, ...TLS_URL_SETTINGS].join(', ')} (conclave's) and ${IOREDIS_URL_PARAMS.join(', ')} (passed to ioredis).`,
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
 *
 * Stricter than kit.ts's redactUrl, on purpose: a Redis URL is checked only after it is shown,
 * so a malformed one (`redis://u:pa#ss@h`, where WHATWG parsing ends the authority at `#`) and
 * a secret-looking parameter of any name must not leak either.
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

/** One of conclave's URL settings, read into `settings` (its rule checked later, as an option). */
function readUrlSetting(
  settings: Omit<RedisUrlSettings, 'url'>,
  name: (typeof URL_SETTINGS)[number],
  value: string,
): void {
  if (name === 'prefix') settings.prefix = value
  else if (name === 'replicas' || name === 'replicaTimeoutMs' || name === 'maxLeaseMs') {
    if (!/^\d+$/.test(value)) {
      throw new OptionsError(
        name,
        value,
        `${name} in a Redis URL is a whole number (e.g. ?${name}=1).`,
      )
    }
    settings[name] = Number(value)
  } else if (value === 'true' || value === 'false') settings[name] = value === 'true'
  else {
    throw new OptionsError(
      name,
      value,
      `${name} in a Redis URL is true or false (e.g. redis://host:6379?${name}=false).`,
    )
  }
}

const SENTINEL_URL_RULE =
  "A Redis Sentinel URL is redis+sentinel://[user:password@]host:port[,host:port...]/mastername[?params] (the sentinels' addresses, then the name they know the master by)."

/** Query parameters of a Sentinel URL that go to ioredis (besides conclave's own). */
const SENTINEL_URL_PARAMS = ['db', 'sentinelUsername', 'sentinelPassword'] as const

/**
 * `redis+sentinel://[user:password@]host:port,host:port/mastername[?params]`: the sentinels'
 * addresses (port default 26379), the master's name, its user and password (for the master, as
 * ioredis takes them); `?db=`, `?sentinelUsername=`, `?sentinelPassword=` go to ioredis, and
 * conclave's settings as in a redis:// URL. Not a WHATWG URL (a list of hosts): parsed by hand.
 */
export function parseSentinelUrl(url: string, field = 'url'): RedisUrlSettings {
  const refuse = (): never => {
    throw new OptionsError(field, redactUrl(url), SENTINEL_URL_RULE)
  }
  const match = /^redis\+sentinel:\/\/(?:([^@/?#]*)@)?([^/?#]+)\/([^/?#]+)\/?(?:\?([^#]*))?$/i.exec(
    url,
  )
  if (!match) return refuse()
  const [, userinfo, hostList, rawName, query] = match
  const sentinels = hostList!.split(',').map((entry) => {
    const hostPort = /^(\[[0-9a-f:.]+\]|[^:[\]]+)(?::(\d{1,5}))?$/i.exec(entry)
    if (!hostPort) return refuse()
    const port = hostPort[2] === undefined ? 26379 : Number(hostPort[2])
    if (port < 1 || port > 65535) return refuse()
    return { host: hostPort[1]!.replace(/^\[|\]$/g, ''), port }
  })
  const sentinel: SentinelClientOptions = { sentinels, name: decodeQueryPart(rawName!) }
  if (userinfo) {
    const colon = userinfo.indexOf(':')
    const user = decodeQueryPart(colon < 0 ? userinfo : userinfo.slice(0, colon))
    if (user) sentinel.username = user
    if (colon >= 0) sentinel.password = decodeQueryPart(userinfo.slice(colon + 1))
  }
  const settings: Omit<RedisUrlSettings, 'url'> = {}
  const seen = new Set<string>()
  for (const [name, value] of new URLSearchParams(query ?? '')) {
    if (seen.has(name))
      throw new OptionsError(
        name,
        SECRET_NAME.test(name) ? '***' : value,
        `${name} is given twice in the Redis URL.`,
      )
    seen.add(name)
    if ((URL_SETTINGS as readonly string[]).includes(name)) {
      readUrlSetting(settings, name as (typeof URL_SETTINGS)[number], value)
    } else if (name === 'db') {
      if (!/^\d+$/.test(value)) throw new OptionsError('db', value, 'db is a whole number.')
      sentinel.db = Number(value)
    } else if (name === 'sentinelUsername' || name === 'sentinelPassword') {
      sentinel[name] = value
    } else {
      throw new OptionsError(
        name,
        SECRET_NAME.test(name) ? '***' : value,
        `Unknown Redis Sentinel URL parameter. Known: ${URL_SETTINGS.join(', ')} (conclave's) and ${SENTINEL_URL_PARAMS.join(', ')} (passed to ioredis).`,
      )
    }
  }
  return { url, ...settings, sentinel }
}

const CLUSTER_URL_RULE =
  'A Redis Cluster URL is redis+cluster://[user:password@]host:port[,host:port...][?params] (some of its nodes; the client finds the rest).'

/**
 * `redis+cluster://[user:password@]host:port,host:port[?params]`: nodes of a Redis Cluster to
 * start from (port default 6379), the credentials of every node; conclave's settings as in a
 * redis:// URL, nothing else. Parsed by hand (a list of hosts).
 */
export function parseClusterUrl(url: string, field = 'url'): RedisUrlSettings {
  const refuse = (): never => {
    throw new OptionsError(field, redactUrl(url), CLUSTER_URL_RULE)
  }
  const match = /^redis\+cluster:\/\/(?:([^@/?#]*)@)?([^/?#]+)\/?(?:\?([^#]*))?$/i.exec(url)
  if (!match) return refuse()
  const [, userinfo, hostList, query] = match
  const nodes = hostList!.split(',').map((entry) => {
    const hostPort = /^(\[[0-9a-f:.]+\]|[^:[\]]+)(?::(\d{1,5}))?$/i.exec(entry)
    if (!hostPort) return refuse()
    const port = hostPort[2] === undefined ? 6379 : Number(hostPort[2])
    if (port < 1 || port > 65535) return refuse()
    return { host: hostPort[1]!.replace(/^\[|\]$/g, ''), port }
  })
  const cluster: ClusterClientOptions = { nodes }
  if (userinfo) {
    const colon = userinfo.indexOf(':')
    const user = decodeQueryPart(colon < 0 ? userinfo : userinfo.slice(0, colon))
    if (user) cluster.username = user
    if (colon >= 0) cluster.password = decodeQueryPart(userinfo.slice(colon + 1))
  }
  const settings: Omit<RedisUrlSettings, 'url'> = {}
  const seen = new Set<string>()
  for (const [name, value] of new URLSearchParams(query ?? '')) {
    const shown = SECRET_NAME.test(name) ? '***' : value
    if (seen.has(name))
      throw new OptionsError(name, shown, `${name} is given twice in the Redis URL.`)
    seen.add(name)
    if (!(URL_SETTINGS as readonly string[]).includes(name)) {
      throw new OptionsError(
        name,
        shown,
        `Unknown Redis Cluster URL parameter. Known: ${URL_SETTINGS.join(', ')}.`,
      )
    }
    readUrlSetting(settings, name as (typeof URL_SETTINGS)[number], value)
  }
  return { url, ...settings, cluster }
}
