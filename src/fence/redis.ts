/**
 * Fenced writes to Redis: one Lua script applies a SET only when the writer's token is at least
 * the highest token the key has seen, and remembers that token in a companion key in the same
 * hash slot (so it works on Redis Cluster). A stale writer gets a StaleTokenError.
 *
 * Takes any client with ioredis' `evalsha`/`eval` (a `Redis` or a `Cluster`), or a connected
 * node-redis client (through the Redis backend's adapter); neither library is imported here.
 */
import {
  defineScript,
  type PipelineClient,
  runScript,
  runScriptWaiting,
  type ScriptClient,
} from '../backends/redis/scripts.js'
import fencedWriteLua from '../backends/redis/scripts/fenced-write.lua.js'
import {
  checkNodeRedisClient,
  connectionOf,
  looksLikeNodeRedis,
  type NodeRedisClient,
} from '../backends/redis/client.js'
import { validateToken } from '../validate.js'
import { BackendError, OptionsError, StaleTokenError } from '../errors.js'

/** The part of an ioredis client (Redis or Cluster) the fence uses. */
export type RedisScriptClient = ScriptClient

/** Options of `fencedWrite`. */
export interface FencedWriteOptions {
  /** Expire the data key after this many ms (the fence key itself never expires). */
  pxMs?: number
  /** Where the highest token is kept. Default: derived from the key, in its hash slot. */
  fenceKey?: string
  /**
   * A write counts only once this many replicas acknowledged it (`WAIT` in the same round
   * trip; the client then needs ioredis' `pipeline`). For a fence on a Sentinel-managed Redis:
   * a write only the master has can be lost in a failover, and so can the fence key that
   * refuses the older terms' writes. Unacknowledged: a BackendError (the write may still be on
   * the master). Default 0.
   */
  replicas?: number
  /** How long WAIT waits for `replicas`, in ms. Default 500. */
  replicaTimeoutMs?: number
}

/** The script (src/backends/redis/scripts/fenced-write.lua, built into a module with the rest). */
const FENCED_WRITE = defineScript('fenced-write', fencedWriteLua)

/**
 * The key holding `key`'s highest token: `key:conclave-fence` when the key has a hash tag (the
 * tag decides the slot), else `{key}:conclave-fence` (a tag equal to the whole key hashes to the
 * key's own slot).
 */
export function fenceKeyFor(key: string): string {
  if (typeof key !== 'string' || key.length === 0) {
    throw new OptionsError('key', key, 'A Redis key is a non-empty string.')
  }
  const open = key.indexOf('{')
  const close = open < 0 ? -1 : key.indexOf('}', open + 1)
  if (open >= 0 && close > open + 1) return `${key}:conclave-fence`
  if (!key.includes('}')) return `{${key}}:conclave-fence`
  throw new OptionsError(
    'key',
    key,
    'A key with "}" but no hash tag cannot get a fence key in its slot: give it a hash tag ({...}) or pass fenceKey.',
  )
}

/**
 * SETs `key` to `value` if `token` is >= the highest token `key` has seen; otherwise throws a
 * StaleTokenError (code ERR_CONCLAVE_STALE_TOKEN) carrying the token and the highest seen.
 */
export async function fencedWrite(
  client: RedisScriptClient | NodeRedisClient,
  key: string,
  token: number,
  value: string | Buffer,
  options: FencedWriteOptions = {},
): Promise<void> {
  validateToken(token)
  if (looksLikeNodeRedis(client)) {
    checkNodeRedisClient(client)
    client = connectionOf(client).commands
  }
  const fenceKey = options.fenceKey ?? fenceKeyFor(key)
  const px = options.pxMs ?? 0
  if (!Number.isInteger(px) || px < 0) {
    throw new OptionsError('pxMs', options.pxMs, 'pxMs must be a non-negative integer of ms.')
  }
  const replicas = options.replicas ?? 0
  if (!Number.isInteger(replicas) || replicas < 0 || replicas > 100) {
    throw new OptionsError(
      'replicas',
      options.replicas,
      'replicas must be an integer from 0 to 100.',
    )
  }
  const timeoutMs = options.replicaTimeoutMs ?? 500
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1) {
    throw new OptionsError(
      'replicaTimeoutMs',
      options.replicaTimeoutMs,
      'replicaTimeoutMs must be a positive integer of ms.',
    )
  }
  const keys = [key, fenceKey]
  const args = [String(token), value, String(px)]
  let reply: unknown
  if (replicas > 0) {
    if (typeof (client as Partial<PipelineClient>).pipeline !== 'function') {
      throw new OptionsError(
        'replicas',
        replicas,
        'replicas needs a client with pipeline() (ioredis).',
      )
    }
    const answer = await runScriptWaiting(
      client as ScriptClient & PipelineClient,
      FENCED_WRITE,
      keys,
      args,
      {
        replicas,
        timeoutMs,
      },
    )
    reply = answer.reply
    if ((reply as [number])[0] === 1 && answer.acked < replicas) {
      throw new BackendError(
        `fenced write to Redis key "${key}": acknowledged by ${answer.acked} of the ${replicas} replicas required within ${timeoutMs} ms, so it does not count (a failover could lose it)`,
      )
    }
  } else {
    reply = await runScript(client, FENCED_WRITE, keys, args)
  }
  const [applied, highest] = reply as [number, string]
  if (applied !== 1) throw new StaleTokenError(`Redis key "${key}"`, token, Number(highest))
}

/** The highest token `key` has seen through fencedWrite (0 if none). */
export async function highestToken(
  client: { get(key: string): Promise<string | null> },
  key: string,
  options: { fenceKey?: string } = {},
): Promise<number> {
  const seen = await client.get(options.fenceKey ?? fenceKeyFor(key))
  return seen === null ? 0 : Number(seen)
}
