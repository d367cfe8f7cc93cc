/**
 * Where the etcd backend keeps things and how a key's value reads.
 *
 * Key of a candidate: `<namespace><prefix><resource>#<candidate>`. `#` is not allowed in resource
 * names, so the range `<prefix><resource>#` holds exactly one resource's candidates: with `/` as
 * the separator, resource `a` would also see the keys of resource `a/b`, and candidate `b/x` of
 * resource `a` could not be told from candidate `x` of resource `a/b`.
 *
 * Value: JSON `{ "tickets": N, "leaseMs": L, "metadata": M }` as written by the candidate's
 * latest acquire, with `"waiting": true` while the key waits in line: a key that ranks within
 * the tickets is granted when its own candidate asks (its acquire drops the flag), or, if it is
 * also marked `"watched": true` (its backend watches the resource for the candidate, and names
 * the grant to it), by the release that freed its ticket, in the release's own transaction. `tickets` is stored so that holders() (which has no tickets argument) ranks the
 * same way each candidate's own acquire did, and so that an acquire asking for other tickets
 * than the resource's live keys were made with is refused (see `rank`).
 */
import type { Json } from '../../backend.js'

/** What a candidate's key holds: the acquire's tickets, lease and metadata. */
export interface Stored {
  tickets: number
  leaseMs: number
  metadata: Json
  /** A place in line, not (yet) a grant. */
  waiting?: boolean
  /**
   * A place whose backend watches the resource for its candidate: a release may grant it in
   * its own transaction (its backend's watch tells the candidate). Only with `waiting`.
   */
  watched?: boolean
}

/** A value as read back: `foreign` when this backend did not write it. */
export interface Decoded extends Stored {
  foreign: boolean
}

/** A key's value as written (only the known fields, in a fixed order). */
export function encodeValue(stored: Stored): Buffer {
  const { tickets, leaseMs, metadata } = stored
  return Buffer.from(
    JSON.stringify(
      stored.waiting
        ? stored.watched
          ? { tickets, leaseMs, metadata, waiting: true, watched: true }
          : { tickets, leaseMs, metadata, waiting: true }
        : { tickets, leaseMs, metadata },
    ),
  )
}

/**
 * Reads a value written by this backend. Anything else found under the prefix (written by hand
 * or by another program) counts as a holder of one ticket with no metadata, so it is never
 * ignored: it can only delay candidates, never let an extra one in.
 */
export function decodeValue(value: Buffer | undefined): Decoded {
  try {
    const parsed = JSON.parse(value?.toString('utf8') ?? '') as Partial<Stored> | null
    if (
      parsed &&
      typeof parsed === 'object' &&
      Number.isInteger(parsed.tickets) &&
      (parsed.tickets as number) >= 1 &&
      Number.isInteger(parsed.leaseMs) &&
      (parsed.leaseMs as number) >= 1
    ) {
      return {
        tickets: parsed.tickets as number,
        leaseMs: parsed.leaseMs as number,
        metadata: parsed.metadata ?? null,
        waiting: parsed.waiting === true,
        watched: parsed.waiting === true && parsed.watched === true,
        foreign: false,
      }
    }
  } catch {
    // fall through: not ours
  }
  return { tickets: 1, leaseMs: Number.POSITIVE_INFINITY, metadata: null, foreign: true }
}

/** One key of a resource's range, ranked. */
export interface RankedKey<K> {
  kv: K
  stored: Decoded
  /** Within the resource's tickets: a ticket is this key's (granted, or free for it). */
  holder: boolean
  /** Within the tickets and not waiting: its candidate was granted the resource. */
  granted: boolean
}

/**
 * Ranks a resource's keys (oldest create revision first). The tickets of the resource are the
 * ones recorded by its earliest key this backend wrote (an acquire never creates a key with
 * other tickets while such a key lives, so normally every key agrees). Every key takes a place
 * in the queue; a key holds when fewer than `tickets` keys precede it and it was made with
 * those tickets. A key this backend did not write holds only in the first place: it can delay
 * candidates, never let an extra one in. A key made with other tickets (left by an older
 * version) never holds.
 */
export function rank<K extends { value: Buffer }>(
  kvs: readonly K[],
): { tickets: number | undefined; keys: RankedKey<K>[] } {
  return rankDecoded(kvs.map((kv) => ({ kv, stored: decodeValue(kv.value) })))
}

/** `rank` over keys whose values are already decoded (the watch keeps them so). */
export function rankDecoded<K>(keys: readonly { kv: K; stored: Decoded }[]): {
  tickets: number | undefined
  keys: RankedKey<K>[]
} {
  let tickets: number | undefined
  const ranked = keys.map(({ kv, stored }, place) => {
    if (stored.foreign) return { kv, stored, holder: place === 0, granted: place === 0 }
    tickets ??= stored.tickets
    const holder = stored.tickets === tickets && place < tickets
    return { kv, stored, holder, granted: holder && !stored.waiting }
  })
  return { tickets, keys: ranked }
}

/**
 * Waiters before the key at `index` of a ranking: the places before it that are not grants
 * (`held + ahead < tickets` is then exactly "this key ranks within the tickets", since grants
 * only ever stand within them). Without a place (`index` -1): every place that is not a grant.
 */
export function aheadOf(keys: readonly RankedKey<unknown>[], index: number): number {
  const before = index < 0 ? keys : keys.slice(0, index)
  return before.filter((k) => !k.granted).length
}

/** The tickets of the earliest key this backend wrote among `kvs`, other than `except`. */
export function recordedTickets<K extends { value: Buffer }>(
  kvs: readonly K[],
  except?: K,
): number | undefined {
  for (const kv of kvs) {
    if (kv === except) continue
    const stored = decodeValue(kv.value)
    if (!stored.foreign) return stored.tickets
  }
  return undefined
}

/** Keys are handled as latin1 strings: one char per byte, so any namespace bytes survive. */
export const KEY_ENCODING = 'latin1'

/** A key as etcd takes it. */
export function keyBuffer(key: string): Buffer {
  return Buffer.from(key, KEY_ENCODING)
}

/** A key as etcd returns it, as this backend handles it. */
export function keyString(key: Buffer): string {
  return key.toString(KEY_ENCODING)
}

/** The keys and ranges of one backend: its client's namespace and its prefix. */
export class Layout {
  /** The client's namespace plus the backend's prefix. */
  readonly base: string

  /**
   * @param namespace the etcd3 client's namespace (latin1), applied by hand to raw KV calls
   * @param prefix the backend's `prefix` option
   */
  constructor(
    namespace: string,
    readonly prefix: string,
  ) {
    this.base = namespace + prefix
  }

  /** The start of one resource's range, with the namespace (as raw KV calls need it). */
  resourcePrefix(resource: string): string {
    return `${this.base}${resource}#`
  }

  /** The same without the namespace, for the client's watch builder (which adds it). */
  watchPrefix(resource: string): string {
    return `${this.prefix}${resource}#`
  }

  key(resource: string, candidate: string): string {
    return `${this.resourcePrefix(resource)}${candidate}`
  }

  /** The resource of a candidate's key (resource names have no `#`). */
  resourceOf(key: string): string {
    return key.slice(this.base.length, key.indexOf('#', this.base.length))
  }

  candidateOf(resource: string, key: string): string {
    return key.slice(this.resourcePrefix(resource).length)
  }

  /** [start, end) of a resource's range ('$' is the byte after '#'). */
  range(resource: string): { key: Buffer; range_end: Buffer } {
    return {
      key: keyBuffer(this.resourcePrefix(resource)),
      range_end: keyBuffer(`${this.base}${resource}$`),
    }
  }
}
