/**
 * conclave/redis: the Redis backend (see backend.ts for how it works). This file is the public
 * face: the factories and what a user of the backend needs to name.
 */
import { RedisBackend } from './backend.js'
import type { RedisBackendOptions } from './options.js'

export { RedisBackend } from './backend.js'
export { keySlot, keyspaceChannels, resourceKeys, type ResourceKeys } from './layout.js'
export type { NodeRedisClient, RedisClientInput } from './client.js'
export {
  OWNED_CLIENT_DEFAULTS,
  parseRedisUrl,
  parseClusterUrl,
  parseSentinelUrl,
  type ClusterClientOptions,
  redactUrl,
  type SentinelClientOptions,
  type RedisBackendOptions,
  type RedisUrlSettings,
} from './options.js'
export { KEYSPACE_FLAGS, KEYSPACE_WARNING, missingKeyspaceFlags } from './wakeups.js'

/**
 * Makes a Redis backend: `{ client }` (your ioredis client, or a connected node-redis one) or
 * `{ url }` (its own, made with ioredis).
 */
export function redisBackend(options: RedisBackendOptions): RedisBackend {
  return new RedisBackend(options)
}

/**
 * `redis://...`, `rediss://...` or `redis+sentinel://host:port,host:port/mastername`: a backend
 * that owns (and closes) its own client. The query parameters `prefix`, `startupGrace`,
 * `failoverGrace`, `replicas`, `replicaTimeoutMs` set those options; ioredis gets the URL
 * without them (exactly as given when it has none).
 */
export async function backendFromUrl(url: string): Promise<RedisBackend> {
  return new RedisBackend({ url })
}
