/**
 * Where the Redis backend keeps things. Every key and the channel of a resource share the hash
 * tag `{resource}`, so each script call touches one slot (what Redis Cluster requires); resource
 * names and the prefix cannot contain braces, so the tag is always exactly the resource name.
 * What each key holds is written in the header of the scripts that use it (scripts/*.lua).
 */

/** The keys and channel of one resource. */
export interface ResourceKeys {
  /** Sorted set: candidate -> expiry (ms since epoch, on the server's TIME). */
  holders: string
  /** Hash: candidate -> `<token>:<metadata JSON>`, and ` tickets` -> the live grants' tickets. */
  grants: string
  /** The last token granted on the resource. */
  token: string
  /** Expires with the holders key; alone, it says the keys were deleted by hand. */
  guard: string
  /** Published on whenever the holders change. */
  channel: string
  /**
   * The replication id the scripts last saw the server run under, and since when (the failover
   * grace). Per resource, in its slot (Redis Cluster), and expiring with the token key.
   */
  history: string
  /** Sorted set: candidate -> the order of its place in the resource's line (first come, first served). */
  line: string
  /** Sorted set: candidate -> when its place in line expires (ms since epoch, server TIME). */
  places: string
}

/** The keys and channel of one resource; all share the hash tag `{resource}`. */
export function resourceKeys(prefix: string, resource: string): ResourceKeys {
  const base = `${prefix}{${resource}}`
  return {
    holders: `${base}:holders`,
    grants: `${base}:grants`,
    token: `${base}:token`,
    guard: `${base}:guard`,
    channel: `${base}:changed`,
    history: `${base}:history`,
    line: `${base}:line`,
    places: `${base}:places`,
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

/**
 * A token key outlives the lease of its last new grant by this much, so tokens keep growing
 * across a quiet week without the key living forever (see docs/redis.md).
 */
export const TOKEN_TTL_MS = 7 * 24 * 3_600_000

/** CRC16-CCITT (XMODEM), as Redis Cluster hashes keys. */
function crc16(bytes: Uint8Array): number {
  let crc = 0
  for (const byte of bytes) {
    crc ^= byte << 8
    for (let bit = 0; bit < 8; bit++)
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff
  }
  return crc
}

/**
 * The Redis Cluster slot of every key of `resource` (their hash tag is exactly the resource
 * name), so the backend can group a tick's renewals per slot and node.
 */
export function keySlot(resource: string): number {
  return crc16(new TextEncoder().encode(resource)) % 16384
}
