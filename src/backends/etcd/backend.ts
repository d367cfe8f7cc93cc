/**
 * The etcd backend, after etcd's `clientv3/concurrency`: a key per candidate under the resource's
 * range, created only if absent and attached to a lease; the first `tickets` keys by create
 * revision hold the resource; the token is the key's create revision (cluster-wide, strictly
 * increasing); waiters are served first come, first served (a waiting key is marked, and becomes
 * a grant when its own candidate asks once it ranks within the tickets, or in the transaction of
 * the release that freed its ticket when its backend watches for it) and woken by one watch
 * per backend that names the waiters a change frees a ticket for. Unlike etcd3's `Election`:
 * - every answer goes by the whole ranking (never trusts one predecessor's delete: etcd3 #176);
 * - one lease per backend instance (per lease length in whole seconds) carries every key it
 *   writes (grants and places in line), kept alive by exactly one keepalive per renew() call,
 *   whatever the number of grants and places, on one long-lived keepalive stream per member;
 *   no background keepalive loop: the election core owns all timing, and its deadline (send time
 *   + leaseMs - margin) lands before the server's expiry, since each keepalive gives the lease at
 *   least leaseMs from when etcd handles it;
 * - each key also expires on this process's clock (deleted leaseMs after its last acquire or
 *   renewal), because on a shared lease a key whose term ended would otherwise live on as long
 *   as the backend's other grants are renewed.
 *
 * etcd3 is an optional peer dependency: only types are imported statically; `{ hosts }` loads it.
 */
import type {
  Etcd3,
  IKeyValue,
  ILeaseTimeToLiveResponse,
  IOptions,
  IRangeRequest,
  ITxnRequest,
  ITxnResponse,
  Namespace,
} from 'etcd3'
import {
  type AcquireRequest,
  type AcquireResult,
  type Backend,
  type Holder,
  type ReleaseRequest,
  type RenewRequest,
  type StoredRecord,
  type Unwatch,
  type Waiter,
  type WatchChange,
  type WriteRecordRequest,
  type WriteRecordResult,
  validateAcquire,
  validateRelease,
  validateRenew,
  validateResource,
} from '../../backend.js'
import {
  BackendClosedError,
  BackendError,
  BackendTimeoutError,
  TicketsMismatchError,
} from '../../errors.js'
import { validateRecordKey, validateWriteRecord } from '../../validate.js'
import { decodeRecord, encodeRecord, recordKeyOf } from './records.js'
import {
  backendError,
  CloseGate,
  errorText,
  requirePeer,
  serverLabel,
  timeoutError,
  withDeadline,
} from '../kit.js'
import {
  aheadOf,
  type Decoded,
  decodeValue,
  encodeValue,
  keyBuffer,
  keyString,
  KEY_ENCODING,
  Layout,
  rank,
  rankDecoded,
  type RankedKey,
  recordedTickets,
  type Stored,
} from './layout.js'
import { Batches } from './batch.js'
import { KeepAlives } from './keepalive.js'
import { checkVersion } from './versions.js'
import {
  ETCD_CLIENT_DEFAULTS,
  ETCD_GRPC_KEEPALIVE,
  type EtcdBackendOptions,
  resolveEtcdOptions,
  type ResolvedEtcdOptions,
} from './options.js'
import { type LineKey, Watches } from './wakeups.js'

/** One etcd lease of this backend. */
interface Lease {
  /** etcd's lease id (an int64, as a decimal string). */
  readonly id: string
  /** The TTL etcd granted, in seconds (never below what was asked; etcd may raise it). */
  readonly ttlSec: number
  /** etcd said it is gone (expired or revoked); a fresh one is granted for the next acquire. */
  dead: boolean
}

/** A key this backend wrote and still answers for. */
interface Entry {
  readonly key: string
  readonly token: number
  lease: Lease
  leaseMs: number
  /** Ranked within its tickets at its last acquire (false: queued behind others). */
  held: boolean
  /** Monotonic time after which this process deletes the key (its own expiry). */
  expiresAt: number
  timer: NodeJS.Timeout | undefined
  /** Its expiry is due but the delete has not reached etcd yet (retried). */
  doomed: boolean
}

/** A key with its value decoded, oldest create revision first (what `#rank` ranks). */
interface Line {
  kv: IKeyValue
  stored: Decoded
}

/** A transaction sent with others of its turn (see batch.ts). */
interface Txn {
  readonly kind: 'acquire' | 'release'
  /** The lease its puts use (a batch holds one), and whether to keep it alive in the round trip. */
  readonly lease?: Lease
  readonly refresh?: boolean
  readonly txn: ITxnRequest
}

/** A place's value as this acquire writes it (`waiting`), and with the other `watched` mark. */
interface Places {
  readonly waiting: Buffer
  readonly other: Buffer
}

/** Where `remainingMs` comes from: etcd's lease TTL (whole seconds, rounded down) per lease. */
type LeaseTtls = Map<string, number | undefined>

const now = () => performance.now()

/**
 * Calls that wait their turn beyond MAX_IN_FLIGHT at once: asks, reads and releases, which come
 * in bursts (10,000 campaigns started or closed together; a release that waits only delays the
 * next holder). Renewals and lease grants never wait behind them: a renewal stuck in a queue
 * could cost a term.
 */
const LIMITED = new Set(['acquire', 'read', 'lease read', 'release'])
/** Enough to keep etcd busy (it batches concurrent writes into one raft round). */
const MAX_IN_FLIGHT = 100

/** The etcd backend: a key per candidate on one shared lease, ranked by create revision. */
export class EtcdBackend implements Backend {
  readonly name: string = 'etcd'
  readonly #options: ResolvedEtcdOptions
  readonly #client: Namespace
  readonly #owned: Etcd3 | undefined
  /**
   * The clients calls go to: one single-host client per member when the backend made them from
   * several hosts (so a call can be sent to a chosen member and retried on another), else the
   * one client.
   */
  readonly #members!: { client: Namespace; where: string }[]
  /** The member calls go to first: the last one that answered, or the next after a failure. */
  #preferred = 0
  readonly #layout: Layout
  readonly #watches: Watches
  /** One LeaseKeepAlive stream per member client, shared by every acquire and renewal. */
  readonly #keepalives = new KeepAlives()
  #versionChecked = false
  /** The endpoints, for messages. */
  readonly #where: string
  /** Asks and deletes of one turn, on different resources, sent as one transaction. */
  readonly #batches = new Batches<Txn, [number, ITxnResponse]>(
    (items) => this.#sendBatch(items),
    isTooBig,
  )
  /** The current lease per requested TTL in seconds (a grant may still be in flight). */
  readonly #slots = new Map<number, Promise<{ lease: Lease; issuedAt: number }>>()
  /** Every lease this instance was granted and etcd has not reported gone. */
  readonly #leases = new Map<string, Lease>()
  /** Every lease id this instance was ever granted: a key on one of them is ours. */
  readonly #everLeased = new Set<string>()
  readonly #entries = new Map<string, Entry>()
  /** Per-key queue: acquire, release and self-expiry of one key never interleave. */
  readonly #locks = new Map<string, Promise<void>>()
  readonly #gate = new CloseGate('etcd')
  /** The single-host clients this backend made (closed by close()). */
  #memberClients: Etcd3[] = []
  /** Set when close()'s teardown begins (after the onClose hooks): background work stops. */
  #down = false
  /** `etcd at host:port[,host:port]`, for messages. */
  readonly #label: string
  /** Limited calls in flight (see LIMITED), and the ones waiting for a turn. */
  #inFlight = 0
  readonly #turns: (() => void)[] = []

  constructor(options: EtcdBackendOptions) {
    this.#options = resolveEtcdOptions(options)
    if (this.#options.client) {
      this.#client = this.#options.client
    } else {
      const { Etcd3: Client } = requirePeer<typeof import('etcd3')>(
        'etcd3',
        'etcdBackend({ hosts }) (and an etcd:// URL)',
      )
      const make = (hosts: string | string[]) =>
        new Client({
          ...ETCD_CLIENT_DEFAULTS,
          ...this.#options.clientOptions,
          grpcOptions: { ...ETCD_GRPC_KEEPALIVE, ...this.#options.clientOptions.grpcOptions },
          hosts,
        })
      const hosts = this.#options.hosts!
      // The client of every host serves the watches (etcd3 moves a broken watch to another).
      this.#owned = make(hosts)
      this.#client = this.#owned
      if (hosts.length > 1) {
        this.#memberClients = hosts.map((h) => make(h))
        this.#members = this.#memberClients.map((client, i) => ({
          client,
          where: endpoints(hosts[i]),
        }))
      }
    }
    this.#members ??= [{ client: this.#client, where: '' }]
    this.#layout = new Layout(this.#client.prefix.toString(KEY_ENCODING), this.#options.prefix)
    const where = endpoints(
      this.#options.hosts ?? (this.#client as unknown as { options?: IOptions }).options?.hosts,
    )
    this.#label = serverLabel('etcd', where)
    this.#where = where
    this.#watches = new Watches(
      this.#client,
      this.#options.timeoutMs,
      this.#client.prefix.toString(KEY_ENCODING),
      this.#options.prefix,
      async (resource) => {
        const range = await this.#call('read', (client, options) =>
          client.kv.range(this.#rangeRequest(resource), options),
        )
        return { kvs: range.kvs, revision: Number(range.header.revision) }
      },
      this.#label,
      (key, token, lease) => this.#handed(key, token, lease),
    )
  }

  /** The key prefix in use (without the client's namespace). */
  get prefix(): string {
    return this.#options.prefix
  }

  async acquire(request: AcquireRequest): Promise<AcquireResult> {
    this.#checkOpen()
    validateAcquire(request)
    this.#checkVersion()
    const key = this.#layout.key(request.resource, request.candidate)
    return this.#withKey(key, () => this.#acquire(request, key))
  }

  async renew(requests: RenewRequest[]): Promise<boolean[]> {
    this.#checkOpen()
    if (!Array.isArray(requests)) throw new BackendError('renew takes an array of requests')
    requests.forEach(validateRenew)
    const issuedAt = now()
    const results = requests.map(() => false)
    type Item = { index: number; entry: Entry; resource: string }
    const byLease = new Map<Lease, { grants: Item[]; queued: Item[] }>()
    requests.forEach((request, index) => {
      const entry = this.#entries.get(this.#layout.key(request.resource, request.candidate))
      // Only a key this backend wrote (and has not seen end) can still be kept, and only for as
      // long as its lease lasts. A grant must be the one with this token; a place in line must
      // not hold (a key that ranks within the tickets answers false: its candidate asks again).
      if (!entry || entry.doomed || entry.lease.dead) return
      if (request.queued ? entry.held : entry.token !== request.token) return
      if (request.leaseMs > entry.lease.ttlSec * 1000) return
      let group = byLease.get(entry.lease)
      if (!group) byLease.set(entry.lease, (group = { grants: [], queued: [] }))
      ;(request.queued ? group.queued : group.grants).push({
        index,
        entry,
        resource: request.resource,
      })
    })
    if (byLease.size === 0) return results
    const leaseMs = Math.min(...requests.map((r) => r.leaseMs))
    const timeoutMs = Math.min(this.#options.timeoutMs, Math.max(leaseMs, 100))
    // Each member gets a tenth of the lease (at least 250 ms): a hung member costs a fraction of
    // the renewal's slack (lease - renewMs - marginMs), and the others are tried within it.
    const tryMs = Math.min(this.#options.memberTimeoutMs, Math.max(250, Math.floor(leaseMs / 10)))
    await Promise.all(
      [...byLease].map(async ([lease, { grants, queued }]) => {
        // Places in line are checked on the watch's copy of their line; a line it has no copy
        // of, or whose copy does not show the place yet (it may lag behind our own acquire), is
        // read (once per resource), in the same round trip.
        const unseen = [
          ...new Set(queued.filter((q) => !this.#inCopy(q.entry)).map((q) => q.resource)),
        ]
        // One keepalive (extends every key on the lease) and one read of the keys on it (for
        // grants), both from the same member, so they see the same lease.
        const [ttl, info, reads] = await this.#call(
          'renewal',
          (client, options) =>
            Promise.all([
              this.#keepalives.keepalive(client, lease.id, options.deadline),
              grants.length > 0
                ? client.leaseClient.leaseTimeToLive({ ID: lease.id, keys: true }, options)
                : Promise.resolve(undefined),
              Promise.all(
                unseen.map((resource) => client.kv.range(this.#rangeRequest(resource), options)),
              ),
            ]),
          timeoutMs,
          tryMs,
        )
        if (ttl <= 0 || (info && Number(info.TTL) < 0)) {
          this.#leaseGone(lease)
          return
        }
        const present = new Set(info?.keys.map(keyString))
        for (const { index, entry } of grants) {
          if (this.#entries.get(entry.key) !== entry || entry.doomed) continue
          if (present.has(entry.key)) {
            results[index] = true
            // Counted from the send, like the core's deadline, which therefore comes first.
            this.#extend(entry, issuedAt + entry.leaseMs)
          } else this.#forget(entry) // deleted behind our back (by hand, or an old release)
        }
        const read = new Map<string, Line[]>(
          unseen.map((resource, i) => [resource, decoded(reads[i]!.kvs)]),
        )
        for (const { index, entry, resource } of queued) {
          if (this.#entries.get(entry.key) !== entry || entry.doomed || entry.held) continue
          const line = read.get(resource) ?? this.#watches.view(resource)
          if (!line) continue // the copy went meanwhile: false, the candidate asks again
          const at = line.findIndex((k) => keyString(k.kv.key) === entry.key)
          const mine = line[at]
          if (!mine || Number(mine.kv.create_revision) !== entry.token) {
            // Gone (etcd says so; a copy may lag behind our own acquire, so only a read counts).
            if (read.has(resource)) this.#forget(entry)
            continue
          }
          // Within the tickets: a ticket is free for it, its candidate asks again (false).
          if (rankDecoded(line).keys[at]!.holder) continue
          results[index] = true
          this.#extend(entry, issuedAt + entry.leaseMs)
        }
      }),
    )
    return results
  }

  /** Whether the watch's copy of the entry's line shows its key under its token. */
  #inCopy(entry: Entry): boolean {
    const line = this.#watches.view(this.#layout.resourceOf(entry.key))
    return (
      line?.some((k) => k.key === entry.key && Number(k.kv.create_revision) === entry.token) ??
      false
    )
  }

  async release(request: ReleaseRequest): Promise<void> {
    this.#checkOpen()
    validateRelease(request)
    const key = this.#layout.key(request.resource, request.candidate)
    await this.#withKey(key, async () => {
      const entry = this.#entries.get(key)
      // The grant is over from here on, whatever becomes of the delete (a dead member, a cut
      // path): a renewal of it says false, its own expiry retries the delete, and the next
      // acquire of this candidate deletes the key if it is still there and queues a new one,
      // so a new term never continues this grant or gets its token again.
      if (entry && (request.token === undefined || entry.token === request.token)) {
        entry.doomed = true
      }
      if (request.token !== undefined) {
        await this.#deleteIfToken(key, request.token, true)
        if (entry && entry.token === request.token) this.#forget(entry)
        return
      }
      // Without a token: whatever this candidate has here, queued or held, if it is ours (a key
      // on another process's lease belongs to another process that uses the same candidate id).
      const response = await this.#call('read', (client, options) =>
        client.kv.range({ key: keyBuffer(key) }, options),
      )
      const kv = response.kvs[0]
      if (kv && (this.#everLeased.has(kv.lease) || entry?.token === Number(kv.create_revision))) {
        await this.#deleteIfToken(key, Number(kv.create_revision), true)
      }
      if (entry) this.#forget(entry)
    })
  }

  async holders(resource: string): Promise<Holder[]> {
    this.#checkOpen()
    validateResource(resource)
    const range = await this.#call('read', (client, options) =>
      client.kv.range(this.#rangeRequest(resource), options),
    )
    return (await this.#rank(resource, rank(range.kvs).keys, new Map())).holders
  }

  /**
   * Backend.waiters: the resource's keys that do not hold (queued behind the holders), in
   * create-revision order, which is the order they would be granted in. remainingMs: until the
   * key's lease runs out (etcd's whole seconds, as for holders) or its leaseMs, whichever comes
   * first; a live campaign keeps it alive, so this is how long the place outlives its candidate.
   */
  async waiters(resource: string): Promise<Waiter[]> {
    this.#checkOpen()
    validateResource(resource)
    const range = await this.#call('read', (client, options) =>
      client.kv.range(this.#rangeRequest(resource), options),
    )
    // A key within the tickets but still marked waiting is a place too (its ticket is free).
    const queued = rank(range.kvs).keys.filter((k) => !k.granted)
    const known = await this.#leaseTtls(
      queued.map((q) => q.kv.lease),
      new Map(),
    )
    const waiters: Waiter[] = []
    for (const { kv, stored } of queued) {
      const ttlSec = kv.lease === '0' ? Number.POSITIVE_INFINITY : known.get(kv.lease)
      if (ttlSec === undefined) continue // its lease is gone: so is the key, a moment later
      waiters.push({
        candidate: this.#layout.candidateOf(resource, keyString(kv.key)),
        metadata: stored.metadata,
        remainingMs: Math.min(ttlSec * 1000, stored.leaseMs, 2 ** 31 - 1),
      })
    }
    return waiters
  }

  /** Backend.readRecord (see records.ts). */
  async readRecord(resource: string, key: string): Promise<StoredRecord | undefined> {
    this.#checkOpen()
    validateResource(resource)
    validateRecordKey(key)
    const id = recordKeyOf(this.#layout.base, resource, key)
    const response = await this.#call('readRecord', (client, options) =>
      client.kv.range({ key: id }, options),
    )
    const kv = response.kvs[0]
    return kv && decodeRecord(kv.value, kv.mod_revision)
  }

  /** Backend.writeRecord: token check, then a put guarded by the mod revision read. */
  async writeRecord(request: WriteRecordRequest): Promise<WriteRecordResult> {
    this.#checkOpen()
    validateWriteRecord(request)
    const id = recordKeyOf(this.#layout.base, request.resource, request.key)
    const current = await this.readRecord(request.resource, request.key)
    if ((current?.version ?? 0) !== request.version || (current && request.token < current.token))
      return { written: false, current }
    const response = await this.#call('writeRecord', (client, options) =>
      client.kv.txn(
        {
          compare: [{ key: id, target: 'Mod', result: 'Equal', mod_revision: request.version }],
          success: [
            { request_put: { key: id, value: encodeRecord(request.token, request.value) } },
          ],
          failure: [],
        },
        options,
      ),
    )
    if (!response.succeeded)
      return { written: false, current: await this.readRecord(request.resource, request.key) }
    return { written: true, version: Number(response.header.revision) }
  }

  async watch(resource: string, onChange: (change?: WatchChange) => void): Promise<Unwatch> {
    this.#checkOpen()
    validateResource(resource)
    if (typeof onChange !== 'function') throw new BackendError('watch takes a function')
    return this.#watches.watch(resource, onChange)
  }

  /** Registers a hook close() runs and awaits before it gives anything up (the Backend contract). */
  onClose(hook: () => Promise<void>): () => void {
    return this.#gate.onClose(hook)
  }

  /**
   * Runs the onClose hooks first (the core ends its terms and releases their grants while every
   * call still works), then stops every watch, forgets every key, revokes this backend's leases
   * (so whatever it still had, a queued key or a grant whose release failed, goes now rather
   * than after a lease) and closes the client if it made it.
   */
  close(): Promise<void> {
    return this.#gate.close(async () => {
      this.#down = true
      for (const entry of this.#entries.values()) clearTimeout(entry.timer)
      this.#entries.clear()
      const leases = [...this.#leases.values()]
      this.#leases.clear()
      this.#slots.clear()
      await this.#watches.close()
      this.#keepalives.close()
      await Promise.all(
        leases.map((lease) =>
          this.#call('revoke', (client, options) =>
            client.leaseClient.leaseRevoke({ ID: lease.id }, options),
          ).catch(() => {}),
        ),
      )
      this.#owned?.close()
      for (const client of this.#memberClients) client.close()
    })
  }

  // ------------------------------------------------------------------------------------------

  async #acquire(request: AcquireRequest, key: string): Promise<AcquireResult> {
    const issuedAt = now()
    const stored: Stored = {
      tickets: request.tickets,
      leaseMs: request.leaseMs,
      metadata: request.metadata,
    }
    // The value of a grant and of a place in line (see layout.ts: `waiting`). A place is marked
    // `watched` while this backend watches the resource for its candidates: a release may then
    // grant it (see #handOn), since the watch names that grant to the candidate.
    const value = encodeValue(stored)
    const watched = this.#watches.listened(request.resource)
    const waiting = encodeValue({ ...stored, waiting: true, watched })
    const other = encodeValue({ ...stored, waiting: true, watched: !watched })
    const places = { waiting, other }
    const stale = this.#entries.get(key)
    if (stale && (stale.doomed || issuedAt >= stale.expiresAt)) {
      // Its term is over (the core's deadline passed before this expiry did), though the key
      // may still be there: never hand its token out again; start afresh behind the others.
      stale.doomed = true
      await this.#deleteIfToken(key, stale.token)
      this.#forget(stale)
    }
    const answered = await this.#fromLine(request, key, value, places, issuedAt)
    if (answered) return answered
    // The revision of the range read this acquire goes by (0: none yet, so expect no key). A
    // key is created only if no key of the resource was created after it, and only if that read
    // showed no live key made with other tickets: so two candidates asking different tickets at
    // once never both get a key; the second one's create fails, it reads the first's key, and
    // is refused.
    let readAt = 0
    // The line as that read showed it: a key created now stands right after it (the compare
    // makes sure no key was created since), so whether it is a grant is known before the put.
    let readLine: Line[] = []
    let refreshed = false
    this.#watches.prepare()
    for (let attempt = 1; ; attempt++) {
      // Every failed attempt means another candidate's key was created meanwhile.
      if (attempt > 16) throw new BackendError('etcd: the queue kept changing under this acquire')
      const { lease, issuedAt: grantedAt } = await this.#lease(request.leaseMs)
      if (lease.ttlSec * 1000 < request.leaseMs) {
        throw new BackendError(`etcd granted a ${lease.ttlSec} s lease for ${request.leaseMs} ms`)
      }
      // A lease granted before this request was sent may have little time left: refresh it in
      // the same round trip as the transaction, on the same member.
      const refresh = !refreshed && grantedAt < issuedAt
      const range = this.#rangeRequest(request.resource)
      const { key: start, range_end } = this.#layout.range(request.resource)
      const created = [...readLine, { kv: { value } as IKeyValue, stored: decodeValue(value) }]
      const createAs = rankDecoded(created).keys[readLine.length]!.holder ? value : waiting
      let ttl: number
      let response: ITxnResponse
      try {
        // With the other asks of this turn (on other resources, on this lease): one round trip.
        ;[ttl, response] = await this.#batches.submit(
          {
            kind: 'acquire',
            lease,
            refresh,
            txn: {
              compare: [
                { key: keyBuffer(key), target: 'Create', result: 'Equal', create_revision: 0 },
                {
                  key: start,
                  range_end,
                  target: 'Create',
                  result: 'Less',
                  create_revision: readAt + 1,
                },
              ],
              success: [
                { request_put: { key: keyBuffer(key), value: createAs, lease: lease.id } },
                { request_range: range },
              ],
              failure: [{ request_range: range }],
            },
          },
          request.resource,
          lease.id,
        )
      } catch (error) {
        if (!isLeaseNotFound(error)) throw error
        this.#leaseGone(lease)
        continue
      }
      if (ttl <= 0) {
        // The lease died under us (our key, if just created, went with it): a fresh one.
        this.#leaseGone(lease)
        continue
      }
      refreshed = true
      const kvs = response.responses[response.succeeded ? 1 : 0]?.response_range?.kvs ?? []
      // The range as of the transaction's revision: the watch keeps it as its copy of the line.
      this.#watches.offer(request.resource, {
        kvs: kvs.map((kv) => ({ ...kv })),
        revision: Number(response.header.revision),
      })
      const index = kvs.findIndex((kv) => keyString(kv.key) === key)
      const mine = kvs[index]
      if (!mine) {
        // Not created: keys were created since the read this attempt went by. Go by this read.
        this.#checkTickets(request, recordedTickets(kvs))
        readAt = Number(response.header.revision)
        readLine = decoded(kvs)
        continue
      }
      const token = Number(mine.create_revision)
      const own = this.#leases.get(mine.lease)
      if (!own || own.dead) {
        // Another process's key under this candidate id (or one written by hand): never
        // adopted. It goes when its lease does; until then this candidate waits like others.
        this.#checkTickets(request, recordedTickets(kvs))
        return this.#notAcquired(request, rankDecoded(decoded(kvs)).keys, -1, new Map())
      }
      const others = recordedTickets(kvs, mine)
      const recorded = decodeValue(mine.value)
      const { holder, granted } = rank(kvs).keys[index]!
      if (others !== undefined && others !== request.tickets) {
        // The resource's other keys were made with other tickets. A grant of ours keeps its
        // key (as a refused acquire leaves a grant on every backend); a queued key must not
        // wait with the wrong tickets.
        if (!granted) {
          await this.#deleteIfToken(key, token)
          const entry = this.#entries.get(key)
          if (entry?.token === token) this.#forget(entry)
        }
        throw new TicketsMismatchError(request.resource, request.tickets, others)
      }
      if (granted && !recorded.foreign && recorded.tickets !== request.tickets) {
        // Our own grant, the only key recording tickets, asked for with other tickets: it lives.
        throw new TicketsMismatchError(request.resource, request.tickets, recorded.tickets)
      }
      // Within the tickets: granted now (a waiting key drops its flag); else it waits.
      const expected = holder ? value : waiting
      if (mine.lease !== lease.id || !mine.value.equals(expected)) {
        // Our own key on our other lease (this candidate changed its lease length), a waiting
        // key whose ticket is free, new metadata: a put keeps the create revision, hence the
        // place and the token; the compare makes sure it is still the same key.
        const readAt = holder ? undefined : Number(mine.mod_revision)
        if (!(await this.#rewrite(key, token, expected, lease, readAt))) continue
      }
      mine.value = expected
      return this.#answer(request, key, decoded(kvs), lease, issuedAt)
    }
  }

  /**
   * The answer from the line (our key in it, with the value of this request): a grant if it
   * ranks within the tickets, else its place. Tracks the key (its own expiry from `issuedAt`).
   */
  async #answer(
    request: AcquireRequest,
    key: string,
    line: readonly Line[],
    lease: Lease,
    issuedAt: number,
  ): Promise<AcquireResult> {
    const ranked = rankDecoded(line).keys
    const index = ranked.findIndex((k) => keyString(k.kv.key) === key)
    const mine = ranked[index]!
    const token = Number(mine.kv.create_revision)
    this.#track(key, token, lease, request.leaseMs, mine.granted, issuedAt)
    const known: LeaseTtls = new Map([[lease.id, lease.ttlSec]])
    if (mine.granted) {
      const { holders } = await this.#rank(request.resource, ranked, known)
      return { acquired: true, token, holders }
    }
    return this.#notAcquired(request, ranked, index, known)
  }

  /**
   * An acquire of a key this backend already has (a waiter asking again, a holder extending),
   * with no transaction that reads and creates:
   * - when the watch's copy of the line shows our key within the tickets (the create revision
   *   and lease we wrote, this request's value): a keepalive written after the request was
   *   sent (the grant's deadline runs from the send; the lease then lives at least its TTL past
   *   it) and, for a waiting key, the put that grants it (compared on its create revision), in
   *   one round trip, no read. Safe because a key within the tickets stays within them while it
   *   exists (only older keys can go before it, newer keys come after it), and while the lease
   *   lives only this backend deletes its keys (under the key's lock, which this acquire
   *   holds). A delete by hand is the one change the copy can learn of a moment late, as an
   *   acquire's own read can: the grant watch and the next renewal (which reads the lease's
   *   keys) end such a term.
   * - otherwise (the copy may lag behind a release: a refusal must be as fresh as the ask):
   *   the keepalive and a linearizable read of the line, a read and no raft write; then the
   *   put that grants it if its ticket is free.
   * Undefined: ask etcd the full way (our key is not there as we wrote it).
   */
  async #fromLine(
    request: AcquireRequest,
    key: string,
    value: Buffer,
    places: Places,
    issuedAt: number,
  ): Promise<AcquireResult | undefined> {
    const entry = this.#entries.get(key)
    if (!entry || entry.doomed || entry.lease.dead || entry.leaseMs !== request.leaseMs) return
    const lease = entry.lease
    const { waiting } = places
    const copy = this.#watches.view(request.resource)
    const seen = this.#mine(copy, key, entry, request, value, places)
    const fromCopy = seen?.holder === true
    // A place whose `watched` mark is out of date (its candidate began to watch since it was
    // queued): marked in the same round trip as the read, compared on its create revision.
    const mark = seen !== undefined && !fromCopy && !seen.kv.value.equals(waiting)
    let ttl: number
    let written = true
    let line: Line[] = []
    try {
      if (fromCopy) {
        const grant = !seen.kv.value.equals(value)
        ;[ttl, written] = await this.#call('acquire', (client, options) =>
          Promise.all([
            this.#keepalives.keepalive(client, lease.id, options.deadline),
            grant ? this.#put(client, options, key, entry.token, value, lease) : true,
          ]),
        )
        line = decoded(copy!.map((k) => (k.key === key ? { ...k.kv, value } : k.kv)))
      } else if (mark) {
        const range = this.#rangeRequest(request.resource)
        const [alive, response] = await this.#call('acquire', (client, options) =>
          Promise.all([
            this.#keepalives.keepalive(client, lease.id, options.deadline),
            client.kv.txn(
              {
                compare: [
                  {
                    key: keyBuffer(key),
                    target: 'Create',
                    result: 'Equal',
                    create_revision: entry.token,
                  },
                  // Still the place the copy shows: not granted since by a release (#handOn).
                  {
                    key: keyBuffer(key),
                    target: 'Mod',
                    result: 'Equal',
                    mod_revision: Number(seen.kv.mod_revision),
                  },
                ],
                success: [
                  { request_put: { key: keyBuffer(key), value: waiting, lease: lease.id } },
                  { request_range: range },
                ],
                failure: [{ request_range: range }],
              },
              options,
            ),
          ]),
        )
        ttl = alive
        written = response.succeeded
        line = decoded(response.responses[response.succeeded ? 1 : 0]?.response_range?.kvs ?? [])
      } else {
        const [alive, range] = await this.#call('acquire', (client, options) =>
          Promise.all([
            this.#keepalives.keepalive(client, lease.id, options.deadline),
            client.kv.range(this.#rangeRequest(request.resource), options),
          ]),
        )
        ttl = alive
        line = decoded(range.kvs)
      }
    } catch (error) {
      if (!isLeaseNotFound(error)) throw error
      ttl = 0
    }
    if (ttl <= 0) {
      this.#leaseGone(lease)
      return
    }
    if (!written || this.#entries.get(key) !== entry) return // the key changed meanwhile
    const mine = this.#mine(line, key, entry, request, value, places)
    if (!mine) return
    if (!fromCopy) {
      const expected = mine.holder ? value : waiting
      if (!mine.kv.value.equals(expected)) {
        const readAt = mine.holder ? undefined : Number(mine.kv.mod_revision)
        if (!(await this.#rewrite(key, entry.token, expected, lease, readAt))) return
        mine.kv.value = expected
        line = decoded(line.map((k) => k.kv))
      }
    }
    return this.#answer(request, key, line, lease, issuedAt)
  }

  /**
   * Our key in the copy of the line, as we wrote it for this request (granted or waiting), with
   * no tickets at odds with the request: its ranking; undefined otherwise.
   */
  #mine(
    line: readonly (LineKey | Line)[] | undefined,
    key: string,
    entry: Entry,
    request: AcquireRequest,
    value: Buffer,
    places: Places,
  ): RankedKey<IKeyValue> | undefined {
    if (!line) return
    const index = line.findIndex((k) => keyString(k.kv.key) === key)
    const mine = line[index]
    if (!mine) return
    if (Number(mine.kv.create_revision) !== entry.token || mine.kv.lease !== entry.lease.id) return
    const v = mine.kv.value
    if (!v.equals(value) && !v.equals(places.waiting) && !v.equals(places.other)) return
    const kvs = line.map((k) => k.kv)
    const others = recordedTickets(kvs, mine.kv)
    if (others !== undefined && others !== request.tickets) return
    const ranked = rankDecoded(line.map((k) => ({ kv: k.kv, stored: k.stored }))).keys[index]!
    // A grant asked again with other tickets is refused by the transaction's path.
    if (ranked.granted && !ranked.stored.foreign && ranked.stored.tickets !== request.tickets)
      return
    return ranked
  }

  /** Refuses an acquire asking other tickets than the resource's live keys recorded. */
  #checkTickets(request: AcquireRequest, recorded: number | undefined): void {
    if (recorded !== undefined && recorded !== request.tickets) {
      throw new TicketsMismatchError(request.resource, request.tickets, recorded)
    }
  }

  /** Not granted: the holders, when to look again, and the waiters before this key (`index`). */
  async #notAcquired(
    request: AcquireRequest,
    ranked: RankedKey<IKeyValue>[],
    index: number,
    known: LeaseTtls,
  ): Promise<AcquireResult> {
    const { holders, soonestMs } = await this.#rank(request.resource, ranked, known)
    // The key keeps its place on this backend's lease, which every renewal keeps alive (the
    // core renews a queued place like a grant): no need to come back before a holder can go.
    return {
      acquired: false,
      holders,
      retryInMs: Math.max(0, soonestMs),
      ahead: aheadOf(ranked, index),
    }
  }

  /**
   * Holders: the resource's keys ranked by create revision (see `rank` in layout.ts), i.e.
   * the candidates whose own acquire grants them. remainingMs comes from etcd's lease TTL,
   * whole seconds rounded down, so it is reported as the upper bound: the key is gone by then (a
   * release or expiry is pushed by the watch anyway). It is also capped at the holder's leaseMs,
   * after which a live holder that stopped renewing deletes its own key.
   */
  /**
   * Adds to `known` the TTL (whole seconds, rounded up; undefined: gone) of each lease of `ids`
   * it lacks, asked of etcd at once; '0' (no lease) is never asked.
   */
  async #leaseTtls(ids: readonly string[], known: LeaseTtls): Promise<LeaseTtls> {
    const unknown = [...new Set(ids)].filter((id) => id !== '0' && !known.has(id))
    const answers = await Promise.all(
      unknown.map((id) => this.#timeToLive(id, false, this.#options.timeoutMs)),
    )
    answers.forEach((info, i) => {
      const ttl = Number(info.TTL)
      known.set(
        unknown[i]!,
        ttl < 0 ? undefined : Math.min(ttl + 1, Math.max(1, Number(info.grantedTTL))),
      )
    })
    return known
  }

  async #rank(
    resource: string,
    line: readonly RankedKey<IKeyValue>[],
    known: LeaseTtls,
  ): Promise<{ holders: Holder[]; soonestMs: number }> {
    const ranked = line.filter((k) => k.holder)
    await this.#leaseTtls(
      ranked.map((r) => r.kv.lease),
      known,
    )
    const holders: Holder[] = []
    // Tickets free for waiters that have not asked yet: taken within their lease, or free then.
    const free: Holder[] = []
    for (const { kv, stored, granted } of ranked) {
      const ttlSec = kv.lease === '0' ? Number.POSITIVE_INFINITY : known.get(kv.lease)
      if (ttlSec === undefined) continue // its lease is gone: so is the key, a moment later
      ;(granted ? holders : free).push({
        candidate: this.#layout.candidateOf(resource, keyString(kv.key)),
        token: Number(kv.create_revision),
        metadata: stored.metadata,
        // A key on no lease (written by hand) never expires: reported as the longest lease.
        remainingMs: Math.min(ttlSec * 1000, stored.leaseMs, 2 ** 31 - 1),
      })
    }
    const all = [...holders, ...free]
    const finite = all.map((h) => h.remainingMs).filter(Number.isFinite)
    // With no holder in sight (their leases just ended, their keys are going), look again soon.
    const soonestMs = all.length === 0 ? 10 : finite.length ? Math.min(...finite) : 60_000
    return { holders, soonestMs }
  }

  /** Puts `value` on an existing key with this lease, if it still has create revision `token`. */
  async #rewrite(
    key: string,
    token: number,
    value: Buffer,
    lease: Lease,
    readAt?: number,
  ): Promise<boolean> {
    return this.#call('acquire', (client, options) =>
      this.#put(client, options, key, token, value, lease, readAt),
    )
  }

  /** The put of #rewrite, through one client. */
  async #put(
    client: Namespace,
    options: { deadline: Date },
    key: string,
    token: number,
    value: Buffer,
    lease: Lease,
    readAt?: number,
  ): Promise<boolean> {
    const response = await client.kv.txn(
      {
        compare: [
          { key: keyBuffer(key), target: 'Create', result: 'Equal', create_revision: token },
          // A place rewritten as read at `readAt` only: another process's release may have
          // granted it since (#handOn), and putting `waiting` back would undo that grant.
          ...(readAt === undefined
            ? []
            : [
                {
                  key: keyBuffer(key),
                  target: 'Mod' as const,
                  result: 'Equal' as const,
                  mod_revision: readAt,
                },
              ]),
        ],
        success: [{ request_put: { key: keyBuffer(key), value, lease: lease.id } }],
        failure: [],
      },
      options,
    )
    return response.succeeded
  }

  /**
   * Deletes `key` if it still has create revision `token` (with the other deletes of this turn).
   * With `handOn` (a release), the same transaction also grants the waiting keys the delete
   * frees a ticket for, when the watch's copy of the line shows them (see #handOn): their
   * backends' watches name those grants to their candidates, who hold them without asking.
   */
  async #deleteIfToken(key: string, token: number, handOn = false): Promise<void> {
    const resource = this.#layout.resourceOf(key)
    const next = handOn ? this.#handOn(resource, key, token) : undefined
    const txn = (then?: ITxnRequest): ITxnRequest => ({
      compare: [{ key: keyBuffer(key), target: 'Create', result: 'Equal', create_revision: token }],
      success: [
        { request_delete_range: { key: keyBuffer(key) } },
        ...(then ? [{ request_txn: then }] : []),
      ],
      failure: [],
    })
    const plain = () => this.#batches.submit({ kind: 'release', txn: txn() }, resource, '')
    if (!next) return void (await plain())
    try {
      // Alone and at once, not one turn later with the others: a waiter is on hold for it, and
      // etcd refuses a whole transaction whose put names a lease it no longer has (then it goes
      // again as a plain delete). Not an ask, so it needs no place in the resource's order.
      await this.#call('release', (client, options) => client.kv.txn(txn(next.txn), options))
    } catch (error) {
      if (!isLeaseNotFound(error)) throw error
      await plain()
    }
  }

  /**
   * The transaction, nested in a release's, that grants the waiting keys deleting `key` frees a
   * ticket for, by the watch's copy of the line; undefined when there is none (or no copy).
   * It succeeds only if no key of the line was created or written since the newest change the
   * copy shows (so the line is the copy's, less keys deleted since, which only ever move a
   * key up) and each key still has its create revision: each is then within the tickets once
   * `key` is gone, as its own candidate's ask would find. The put keeps the key's create
   * revision (its token) and its lease, the one its backend keeps alive for the place, which
   * lives at least the candidate's lease from when its refused ask was sent: what
   * WatchChange.granted asks of a grant made behind a candidate's back. The delete comes
   * first in the same transaction, so etcd orders the grant after it (one revision: nobody
   * sees both keys holding).
   */
  #handOn(
    resource: string,
    key: string,
    token: number,
  ): { lease: string; txn: ITxnRequest } | undefined {
    const copy = this.#watches.view(resource)
    if (!copy) return
    const at = copy.findIndex((k) => k.key === key)
    if (at < 0 || Number(copy[at]!.kv.create_revision) !== token) return
    const line = (keys: readonly LineKey[]) =>
      rankDecoded(keys.map((k) => ({ kv: k, stored: k.stored }))).keys
    const before = line(copy)
    const after = line(copy.filter((_, i) => i !== at))
    const freed = after.filter(
      (k) =>
        k.holder &&
        !k.granted &&
        !k.stored.foreign &&
        k.stored.watched === true &&
        k.kv.kv.lease !== '0' &&
        !before.some((b) => b.kv === k.kv && b.holder),
    )
    // Places of one lease only (etcd refuses a whole transaction whose put names a lease it
    // no longer has; see #deleteIfToken): the rest are woken and ask, as without this.
    const lease = String(freed[0]?.kv.kv.lease ?? '')
    const granted = freed.filter((k) => String(k.kv.kv.lease) === lease)
    if (!granted.length) return
    const newest = Math.max(...copy.map((k) => Number(k.kv.mod_revision)))
    const { key: start, range_end } = this.#layout.range(resource)
    return {
      lease,
      txn: {
        compare: [
          { key: start, range_end, target: 'Mod', result: 'Less', mod_revision: newest + 1 },
          ...granted.map((k) => ({
            key: keyBuffer(k.kv.key),
            target: 'Create' as const,
            result: 'Equal' as const,
            create_revision: Number(k.kv.kv.create_revision),
          })),
        ],
        success: granted.map((k) => ({
          request_put: {
            key: keyBuffer(k.kv.key),
            value: encodeValue({ ...k.kv.stored, waiting: false, watched: false }),
            lease,
          },
        })),
        failure: [],
      },
    }
  }

  /**
   * The watch saw a waiting key become a grant under the same token: whether it is one of this
   * backend's places (its key, token and lease), whose candidate may then hold it at once.
   */
  #handed(key: string, token: number, lease: string): boolean {
    const entry = this.#entries.get(key)
    if (!entry || entry.doomed || entry.token !== token || entry.lease.dead) return false
    if (entry.lease.id !== lease) return false
    entry.held = true
    return true
  }

  /**
   * One batch (see batch.ts): the items' transactions nested in one, or a lone one as it is,
   * with one keepalive of their lease in the same round trip if any of them asked for it.
   */
  async #sendBatch(items: Txn[]): Promise<[number, ITxnResponse][]> {
    const { kind, lease } = items[0]!
    const refresh = lease !== undefined && items.some((i) => i.refresh)
    const [ttl, response] = await this.#call(kind, (client, options) =>
      Promise.all([
        refresh
          ? this.#keepalives.keepalive(client, lease.id, options.deadline)
          : Promise.resolve(lease?.ttlSec ?? 0),
        client.kv.txn(
          items.length === 1
            ? items[0]!.txn
            : { compare: [], success: items.map((i) => ({ request_txn: i.txn })), failure: [] },
          options,
        ),
      ]),
    )
    if (items.length === 1) return [[ttl, response]]
    // A nested answer has no header of its own: it happened at the outer one's revision.
    return items.map((_, i) => [
      ttl,
      { ...response.responses[i]!.response_txn, header: response.header },
    ])
  }

  #rangeRequest(resource: string): IRangeRequest {
    return { ...this.#layout.range(resource), sort_target: 'Create', sort_order: 'Ascend' }
  }

  // --- leases -------------------------------------------------------------------------------

  /** The lease for this lease length, granting one if there is none (or it died). */
  async #lease(leaseMs: number): Promise<{ lease: Lease; issuedAt: number }> {
    // Whole seconds, rounded up: the server never lets a key go sooner than the core assumes.
    const ttlSec = Math.max(1, Math.ceil(leaseMs / 1000))
    for (let slot = this.#slots.get(ttlSec); slot; slot = this.#slots.get(ttlSec)) {
      const current = await slot.catch(() => undefined)
      if (current && !current.lease.dead) return current
      if (this.#slots.get(ttlSec) === slot) this.#slots.delete(ttlSec)
    }
    this.#checkOpen()
    const issuedAt = now()
    const granting = this.#call('lease grant', (client, options) =>
      client.leaseClient.leaseGrant({ TTL: ttlSec, ID: 0 }, options),
    ).then((response) => {
      const lease: Lease = { id: response.ID, ttlSec: Number(response.TTL), dead: false }
      this.#everLeased.add(lease.id)
      if (this.#down) {
        // Granted while closing: give it straight back.
        void this.#call('revoke', (client, o) =>
          client.leaseClient.leaseRevoke({ ID: lease.id }, o),
        ).catch(() => {})
        throw new BackendClosedError('etcd')
      }
      this.#leases.set(lease.id, lease)
      return { lease, issuedAt }
    })
    this.#slots.set(ttlSec, granting)
    granting.catch(() => {
      if (this.#slots.get(ttlSec) === granting) this.#slots.delete(ttlSec)
    })
    return granting
  }

  /** etcd said the lease is gone: so is every key on it. */
  #leaseGone(lease: Lease): void {
    // Its slot is replaced by the next #lease() call, which checks `dead`.
    lease.dead = true
    this.#leases.delete(lease.id)
    for (const entry of [...this.#entries.values()]) if (entry.lease === lease) this.#forget(entry)
  }

  #timeToLive(id: string, keys: boolean, timeoutMs: number): Promise<ILeaseTimeToLiveResponse> {
    return this.#call(
      'lease read',
      (client, options) => client.leaseClient.leaseTimeToLive({ ID: id, keys }, options),
      timeoutMs,
    )
  }

  // --- keys this backend answers for ----------------------------------------------------------

  #track(
    key: string,
    token: number,
    lease: Lease,
    leaseMs: number,
    held: boolean,
    issuedAt: number,
  ): void {
    let entry = this.#entries.get(key)
    if (entry && entry.token !== token) {
      this.#forget(entry)
      entry = undefined
    }
    // A queued place lives as a grant does: leaseMs after its last acquire or renewal.
    const expiresAt = issuedAt + leaseMs
    if (!entry) {
      entry = {
        key,
        token,
        lease,
        leaseMs,
        held,
        expiresAt,
        timer: undefined,
        doomed: false,
      }
      this.#entries.set(key, entry)
    } else {
      entry.lease = lease
      entry.leaseMs = leaseMs
      entry.held = held
      entry.doomed = false
      entry.expiresAt = expiresAt
    }
    this.#schedule(entry)
  }

  #extend(entry: Entry, until: number): void {
    if (until > entry.expiresAt) entry.expiresAt = until
  }

  #forget(entry: Entry): void {
    clearTimeout(entry.timer)
    entry.timer = undefined
    if (this.#entries.get(entry.key) === entry) this.#entries.delete(entry.key)
  }

  /** One timer per key, moved lazily: a renewal only moves `expiresAt`. */
  #schedule(entry: Entry, ms = entry.expiresAt - now()): void {
    if (entry.timer !== undefined || this.#down) return
    entry.timer = setTimeout(
      () => {
        entry.timer = undefined
        void this.#expire(entry)
      },
      Math.max(0, Math.ceil(ms)),
    )
    entry.timer.unref()
  }

  /** The key's own expiry: delete it unless it was renewed or re-acquired meanwhile. */
  async #expire(entry: Entry): Promise<void> {
    if (this.#down || this.#entries.get(entry.key) !== entry) return
    if (now() < entry.expiresAt) return this.#schedule(entry)
    await this.#withKey(entry.key, async () => {
      if (this.#down || this.#entries.get(entry.key) !== entry) return
      if (now() < entry.expiresAt) return this.#schedule(entry)
      // From now on a renewal of it says false, even one already in flight.
      entry.doomed = true
      try {
        await this.#deleteIfToken(entry.key, entry.token)
        this.#forget(entry)
      } catch {
        // Try again soon: on a shared lease the key would otherwise outlive its term.
        if (this.#entries.get(entry.key) === entry && !this.#down) {
          this.#schedule(entry, Math.min(1_000, entry.leaseMs) * (0.5 + Math.random()))
        }
      }
    }).catch(() => {})
  }

  async #withKey<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.#locks.get(key) ?? Promise.resolve()
    const run = previous.then(fn)
    const tail = run.then(
      () => {},
      () => {},
    )
    this.#locks.set(key, tail)
    try {
      return await run
    } finally {
      if (this.#locks.get(key) === tail) this.#locks.delete(key)
    }
  }

  // --- calls ----------------------------------------------------------------------------------

  /**
   * Runs one etcd call with a deadline (passed to gRPC, so the call is cancelled, and enforced
   * here too, since etcd3 may wait before the call starts); failures become BackendErrors.
   * With several members (a client per member), the call goes to the preferred member with
   * at most `tryMs`, and on a failure to the next member, round and round while the deadline
   * lasts (a member whose forwarded request hangs on a dead leader answers the next try once
   * a new leader is elected). Every call is safe to repeat:
   * a write that landed on a member whose answer was lost is found by the retry (a create
   * compares create_revision 0, a delete compares the token), and a keepalive or a read changes
   * nothing; a lease granted twice leaves the extra one to expire unused.
   */
  async #call<T>(
    what: string,
    fn: (client: Namespace, options: { deadline: Date }) => Promise<T>,
    timeoutMs = this.#options.timeoutMs,
    tryMs = this.#options.memberTimeoutMs,
  ): Promise<T> {
    if (!LIMITED.has(what)) return this.#send(what, fn, timeoutMs, tryMs)
    // At most MAX_IN_FLIGHT of these at once; the rest wait their turn, with their deadline
    // counted from when they go out (waiting only shortens a term: its deadline runs from the
    // core's send time).
    if (this.#inFlight < MAX_IN_FLIGHT) this.#inFlight++
    else await new Promise<void>((resolve) => this.#turns.push(resolve))
    try {
      this.#checkOpen()
      return await this.#send(what, fn, timeoutMs, tryMs)
    } finally {
      const next = this.#turns.shift()
      if (next) next()
      else this.#inFlight--
    }
  }

  /** #call without the limit. */
  async #send<T>(
    what: string,
    fn: (client: Namespace, options: { deadline: Date }) => Promise<T>,
    timeoutMs: number,
    tryMs: number,
  ): Promise<T> {
    const members = this.#members
    const until = now() + timeoutMs
    // The last failure per member, for the message.
    const failures = new Map<string, { error: unknown; timedOut: boolean }>()
    for (let i = 0; ; i++) {
      const index = (this.#preferred + i) % members.length
      const left = Math.floor(until - now())
      if (i > 0 && (members.length === 1 || left < 10)) break
      const budget = members.length === 1 ? timeoutMs : Math.min(tryMs, Math.max(left, 1))
      const member = members[index]!
      const label = members.length === 1 ? this.#label : serverLabel('etcd', member.where)
      try {
        const call = fn(member.client, { deadline: new Date(Date.now() + budget) })
        // A little later than gRPC's own deadline, whose error says more when it comes in time.
        const result = await withDeadline(call, budget + 50, () =>
          timeoutError(label, what, budget),
        )
        this.#preferred = index
        return result
      } catch (error) {
        // A call cut by close()'s teardown (revoked lease, closed client) says closed, finally.
        if (this.#down && what !== 'revoke') throw new BackendClosedError('etcd')
        // Calls go elsewhere first from now on; this member is tried again after the others.
        if (this.#preferred === index) this.#preferred = (index + 1) % members.length
        // An answer (the lease is gone) is the same on every member: not retried.
        if (members.length === 1 || isLeaseNotFound(error)) throw backendError(label, what, error)
        failures.delete(member.where)
        failures.set(member.where, { error, timedOut: isTimeout(error) })
      }
    }
    const list = [...failures]
    const detail = list.map(([where, f]) => `${where}: ${errorText(f.error)}`).join('; ')
    const message = `${this.#label}: ${what} failed on ${list.length} of ${members.length} members within ${timeoutMs} ms (${detail})`
    const cause = list[list.length - 1]?.[1].error
    if (list.every(([, f]) => f.timedOut)) throw new BackendTimeoutError(message, { cause })
    throw new BackendError(message, { cause })
  }

  /** Warns once if the cluster runs an etcd with unsafe leases (versions.ts); asks again after no answer. */
  #checkVersion(): void {
    if (this.#versionChecked) return
    this.#versionChecked = true
    const { client, where } = this.#members[this.#preferred]!
    void checkVersion(client, where || this.#where, this.#options.timeoutMs).then(
      (settled) => (this.#versionChecked = settled),
      () => (this.#versionChecked = false),
    )
  }

  #checkOpen(): void {
    this.#gate.check()
  }
}

/** etcd refused a write on a lease it no longer has (the etcd3 error, or ours wrapping it). */
function isLeaseNotFound(error: unknown): boolean {
  const cause = error instanceof BackendError ? error.cause : error
  return (
    cause instanceof Error &&
    (cause.constructor.name === 'EtcdLeaseInvalidError' || /lease not found/i.test(cause.message))
  )
}

/**
 * etcd refused a transaction for its size (--max-txn-ops, --max-request-bytes) or its answer was
 * larger than the client takes: a batch that can be sent again in pieces.
 */
function isTooBig(error: unknown): boolean {
  const cause = error instanceof BackendError ? error.cause : error
  if (!(cause instanceof Error)) return false
  // "too many requests" (also RESOURCE_EXHAUSTED) is etcd overloaded: smaller pieces won't help.
  if (/too many requests/i.test(cause.message)) return false
  return (
    (cause as { code?: unknown }).code === 8 ||
    /too many operations|request is too large|larger than max|RESOURCE_EXHAUSTED/i.test(
      cause.message,
    )
  )
}

/** A call that got no answer in time (ours, or gRPC's DEADLINE_EXCEEDED). */
function isTimeout(error: unknown): boolean {
  if (error instanceof BackendTimeoutError) return true
  const cause = error instanceof BackendError ? error.cause : error
  return (
    cause instanceof Error &&
    ((cause as { code?: unknown }).code === 4 || /deadline exceeded/i.test(cause.message))
  )
}

/** Keys with their values decoded, in the order given. */
function decoded(kvs: readonly IKeyValue[]): Line[] {
  return kvs.map((kv) => ({ kv, stored: decodeValue(kv.value) }))
}

/** Endpoints as `host:port[,host:port]` (without http://), for messages. */
function endpoints(hosts: string | string[] | undefined): string {
  const list =
    hosts === undefined ? ['127.0.0.1:2379'] : typeof hosts === 'string' ? [hosts] : hosts
  return list.map((h) => h.replace(/^https?:\/\//, '').replace(/^[^@/]*@/, '')).join(',')
}
