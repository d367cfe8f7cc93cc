/**
 * Eviction: a Redis whose `maxmemory-policy` may evict conclave's keys under memory pressure
 * can drop a live grant (a second holder then wins while the first still runs) or a resource's
 * last token (fencing then relies on server time alone). `allkeys-*` policies may evict any
 * key; `volatile-*` ones evict keys with a TTL, and every key conclave writes has one (each
 * outlives its grants by at most two leases, so an abandoned resource leaves nothing behind).
 * Only `noeviction` is safe. The backend reads the policy once (at its first acquire) and
 * warns once per server and process, as bullmq does; it never changes the setting.
 */
import { REDIS_EVICTION_WARNING } from '../../errors.js'
import type { RedisConnection } from './client.js'
import type { TimedCall } from './wakeups.js'

/** Servers (host:port) already warned about, so a process says it once per server. */
const evictionWarned = new Set<string>()

/** True for a maxmemory-policy that may evict conclave's keys (all but `noeviction`). */
export function mayEvict(policy: string): boolean {
  return policy !== 'noeviction'
}

/**
 * Reads maxmemory-policy and warns (ConclaveWarning CONCLAVE_REDIS_EVICTION) when it may evict
 * conclave's keys. Resolves true once the question is settled (read, or refused by the server:
 * managed Redis may refuse CONFIG), false when no answer came (ask again later). A Cluster
 * client asks one node: the nodes of a cluster are configured alike in practice.
 */
export async function checkEviction(client: RedisConnection, timed: TimedCall): Promise<boolean> {
  let reply: unknown
  try {
    reply = await timed('config get', () => client.configGet('maxmemory-policy'))
  } catch (error) {
    const cause = (error as { cause?: unknown }).cause
    // A refused CONFIG GET (managed Redis): unknown for good, and not ours to guess.
    return cause instanceof Error && cause.name === 'ReplyError'
  }
  if (!Array.isArray(reply) || reply.length < 2) return true
  const policy = String(reply[1])
  const where = client.endpoint()
  if (!mayEvict(policy) || evictionWarned.has(where)) return true
  evictionWarned.add(where)
  const which = policy.startsWith('volatile-')
    ? 'evicts keys that have a TTL under memory pressure, and every key conclave writes has one'
    : 'may evict any key under memory pressure'
  process.emitWarning(
    `The redis at ${where} has maxmemory-policy "${policy}", which ${which}: an evicted grant lets a second holder win while the first still runs, and an evicted token key leaves fencing to the server's clock alone. Set maxmemory-policy noeviction on the server conclave uses (or give conclave a server of its own); see docs/redis.md.`,
    { type: 'ConclaveWarning', code: REDIS_EVICTION_WARNING },
  )
  return true
}
