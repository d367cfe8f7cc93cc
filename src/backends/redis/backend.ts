/**
 * The Redis backend: one Lua script per operation (expiry and tokens on the server's TIME),
 * keys hash-tagged per resource (one slot per script call, Redis Cluster safe), pub/sub on a
 * per-resource channel to wake waiters through one shared subscriber connection (wakeups.ts).
 * The same connection listens to the keys' keyspace notifications, when the server sends them,
 * so a grant deleted by hand (a raw DEL, which publishes nothing) wakes the watchers too.
 *
 * ioredis and node-redis are optional peer dependencies, behind one RedisConnection
 * (client.ts): `{ client }` takes either; `{ url }` loads ioredis when the backend is made (and
 * fails at once with a MissingPeerError without it).
 */
import type {
  AcquireRequest,
  AcquireResult,
  Backend,
  Holder,
  Json,
  ReleaseRequest,
  RenewRequest,
  StoredRecord,
  Unwatch,
  Waiter,
  WaitReason,
  WatchChange,
  WriteRecordRequest,
  WriteRecordResult,
} from '../../backend.js'
import {
  BackendError,
  BackendTimeoutError,
  ConclaveError,
  RedisClusterError,
  TicketsMismatchError,
} from '../../errors.js'
import {
  checkLeaseWithin,
  validateAcquire,
  validateRelease,
  validateRecordKey,
  validateRenew,
  validateResource,
  validateWriteRecord,
} from '../../validate.js'
import type { Cluster } from 'ioredis'
import { CloseGate, requirePeer, withDeadline } from '../kit.js'
import { keySlot, type ResourceKeys, resourceKeys, TOKEN_TTL_MS } from './layout.js'
import { connectionOf, type RedisConnection } from './client.js'
import { OWNED_CLIENT_DEFAULTS, type RedisBackendOptions, resolveRedisOptions } from './options.js'
import {
  defineScript,
  type ReplicaWait,
  runPipelined,
  runScript,
  runScriptWaiting,
  type Script,
  type ScriptCall,
} from './scripts.js'
import acquireLua from './scripts/acquire.lua.js'
import holdersLua from './scripts/holders.lua.js'
import releaseLua from './scripts/release.lua.js'
import renewLua from './scripts/renew.lua.js'
import waitersLua from './scripts/waiters.lua.js'
import { checkEviction } from './eviction.js'
import { Wakeups } from './wakeups.js'
import { parseRecordReply, parseTime, parseWriteReply, recordKey, WRITE_RECORD } from './records.js'

/** Resources whose key lists a backend keeps made (see #keysOf); past it, the cache starts over. */
const KEY_CACHE_SIZE = 10_000

/** A resource's keys as the scripts take them, made once per resource (acquire runs often). */
interface ScriptKeys {
  readonly keys: ResourceKeys
  /** acquire.lua's KEYS. */
  readonly acquire: readonly string[]
  /** release.lua's and holders.lua's KEYS. */
  readonly release: readonly string[]
}

/** Grants renewed by one script call (a call runs alone on the server: keep each one short). */
const RENEW_BATCH = 1_000

/**
 * One script per operation: scripts/*.lua, built into modules (scripts/gen-assets.js), so that
 * nothing is read from disk at run time and a bundle carries them along.
 */
const SCRIPTS = {
  acquire: defineScript('acquire', acquireLua),
  renew: defineScript('renew', renewLua),
  release: defineScript('release', releaseLua),
  holders: defineScript('holders', holdersLua),
  waiters: defineScript('waiters', waitersLua),
}

/** The Redis backend: one Lua script per operation, pub/sub wake-ups. */
export class RedisBackend implements Backend {
  /** The Backend contract's name. */
  readonly name = 'redis'
  /** Prepended to every key and channel. */
  readonly prefix: string
  /** Each operation fails after this many ms without an answer. */
  readonly timeoutMs: number
  /** How long an unwatched channel stays subscribed. */
  readonly lingerMs: number
  /** The subscriber connection's PING interval and answer deadline. */
  readonly heartbeatMs: number
  /** Whether a server up for less than a lease grants no new ticket (see the option). */
  readonly startupGrace: boolean
  /** Whether a server whose replication history changed grants no new ticket for a lease. */
  readonly failoverGrace: boolean
  /** The longest lease a candidate may use here; the failover grace lasts this long. */
  readonly maxLeaseMs: number
  /** Whether maxLeaseMs was given: only then does the startup grace last it too. */
  readonly #maxLeaseMsGiven: boolean
  /** How many replicas must acknowledge each grant and renewal (0: none). */
  readonly replicas: number
  /** How long WAIT waits for them. */
  readonly replicaTimeoutMs: number
  readonly #owned: boolean
  /** The client, whatever its library (client.ts). */
  readonly #conn: RedisConnection
  /** The last connection error of a client the backend made, until it is ready again. */
  #clientError: Error | undefined
  readonly #gate = new CloseGate('redis')
  readonly #wakeups: Wakeups
  /** maxmemory-policy was read (or refused), or is being read: not asked again. */
  #evictionChecked = false
  /** Per resource (validated), its keys as the scripts take them. */
  readonly #keyCache = new Map<string, ScriptKeys>()

  /** Checks every option first (see options.ts); makes a client only for `{ url }`. */
  constructor(options: RedisBackendOptions) {
    const resolved = resolveRedisOptions(options)
    this.prefix = resolved.prefix
    this.timeoutMs = resolved.timeoutMs
    this.lingerMs = resolved.lingerMs
    this.heartbeatMs = resolved.heartbeatMs
    this.startupGrace = resolved.startupGrace
    this.failoverGrace = resolved.failoverGrace
    this.maxLeaseMs = resolved.maxLeaseMs
    this.#maxLeaseMsGiven = resolved.maxLeaseMsGiven
    this.replicas = resolved.replicas
    this.replicaTimeoutMs = resolved.replicaTimeoutMs
    if (resolved.client !== undefined) {
      this.#owned = false
      this.#conn = connectionOf(resolved.client)
    } else {
      const { Redis: Client, Cluster } = requirePeer<typeof import('ioredis')>(
        'ioredis',
        'redisBackend({ url })',
      )
      this.#owned = true
      const { sentinel, cluster, clientOptions } = resolved
      const owned = cluster
        ? new Cluster(cluster.nodes, {
            redisOptions: {
              ...OWNED_CLIENT_DEFAULTS,
              username: cluster.username,
              password: cluster.password,
              ...clientOptions,
            },
          })
        : sentinel
          ? new Client({ ...OWNED_CLIENT_DEFAULTS, ...sentinel, ...clientOptions })
          : new Client(resolved.url!, { ...OWNED_CLIENT_DEFAULTS, ...clientOptions })
      // Failures reach the election through the operations, which name this error as their
      // cause (ioredis itself rejects them only with "max retries per request"); ioredis
      // reconnects by itself.
      owned.on('error', (error: Error) => (this.#clientError = error))
      owned.on('ready', () => (this.#clientError = undefined))
      this.#conn = connectionOf(owned)
    }
    this.#wakeups = new Wakeups({
      connection: this.#conn,
      prefix: this.prefix,
      lingerMs: this.lingerMs,
      heartbeatMs: this.heartbeatMs,
      gate: this.#gate,
      timed: (what, fn, connection) => this.#timed(what, fn, connection),
    })
  }

  /**
   * One acquire.lua call: extends the candidate's grant, or grants a free ticket (unless the
   * startup grace or the guard of hand-deleted keys says to wait: `retryInMs`), or says who holds.
   */
  async acquire(request: AcquireRequest): Promise<AcquireResult> {
    this.#gate.check()
    validateAcquire(request)
    checkLeaseWithin('redis', request.leaseMs, this.maxLeaseMs)
    this.#checkEviction()
    const { keys, acquire: acquireKeys } = this.#keysOf(request.resource)
    // Each grace covers the grants a server may lack, which may be another candidate's longer
    // lease: the failover grace lasts maxLeaseMs; the startup grace too when it was given (not
    // by default: a fresh server would wait a minute for its first grant).
    const startupGraceMs = !this.startupGrace
      ? 0
      : this.#maxLeaseMsGiven
        ? this.maxLeaseMs
        : request.leaseMs
    const failoverGraceMs = this.failoverGrace ? this.maxLeaseMs : 0
    const call: ScriptCall = [
      acquireKeys,
      [
        request.candidate,
        String(request.tickets),
        String(request.leaseMs),
        JSON.stringify(request.metadata ?? null),
        keys.channel,
        String(TOKEN_TTL_MS),
        String(startupGraceMs),
        String(failoverGraceMs),
      ],
    ]
    const wait = this.#replicaWait()
    let reply: unknown
    if (wait) {
      const answer = await this.#timed('acquire', () =>
        runScriptWaiting(this.#conn.commands, SCRIPTS.acquire, call[0], call[1], wait),
      )
      reply = answer.reply
      const first = Array.isArray(reply) ? Number(reply[0]) : 0
      // Not acknowledged: a promoted replica might not have it, so it is not a grant yet. It
      // stays on the master (no other candidate gets it); asking again extends it and waits again.
      if (first === 1 && answer.acked < wait.replicas)
        throw this.#unacknowledged('acquire', answer.acked)
    } else {
      reply = await this.#run('acquire', SCRIPTS.acquire, call)
    }
    const list = asArray(reply, 'acquire')
    if (Number(list[0]) === 2) {
      throw new TicketsMismatchError(request.resource, request.tickets, Number(list[1]))
    }
    // The keys were deleted by hand while their grants may live: nothing until the guard runs out.
    if (Number(list[0]) === 3) {
      const retryInMs = Number(list[1])
      return { acquired: false, holders: [], retryInMs, wait: deletedKeysWait() }
    }
    const holders = parseHolders(list, 3)
    if (Number(list[0]) === 1) return { acquired: true, token: Number(list[1]), holders }
    // The live places before this candidate's in the resource's line (it has one now).
    const ahead = Number(list[2])
    // A free ticket the server may not grant yet: it started, or its replication history
    // changed (4: a failover), less than a lease ago.
    const graceMs = Number(list[1])
    if (graceMs > 0)
      return {
        acquired: false,
        holders,
        retryInMs: graceMs,
        ahead,
        wait:
          Number(list[0]) === 4
            ? failoverGraceWait(this.#conn.endpoint(), failoverGraceMs)
            : startupGraceWait(this.#conn.endpoint(), startupGraceMs),
      }
    return {
      acquired: false,
      holders,
      // No readable holder although the tickets are taken (keys edited by hand): ask again later.
      retryInMs: holders.length ? Math.min(...holders.map((h) => h.remainingMs)) : request.leaseMs,
      ahead,
    }
  }

  /** Every grant of one renewal tick in one pipelined round trip, batched per script call. */
  async renew(requests: RenewRequest[]): Promise<boolean[]> {
    this.#gate.check()
    for (const request of requests) {
      validateRenew(request)
      checkLeaseWithin('redis', request.leaseMs, this.maxLeaseMs)
    }
    if (requests.length === 0) return []
    const script = SCRIPTS.renew
    // One script call per batch of grants: 10,000 renewals are 10 commands, not 10,000, and no
    // single call holds the server for long.
    if (this.#conn.cluster) return this.#renewInCluster(this.#conn.cluster, requests)
    const calls = renewCalls(this.prefix, requests)
    const replies = await this.#timed('renew', async () => {
      // One pipeline: one round trip for every batch. After a flushed script cache it is run
      // again, which is harmless: a renewal only sets the same lease again.
      const wait = this.#replicaWait()
      const results = await runPipelined(this.#conn.commands, script, calls, wait)
      const flat = results.flatMap(([error, reply]) => {
        if (error) throw error
        return asArray(reply, 'renew')
      })
      // Renewed on the master only: not a renewal (a rejection: the terms keep their deadlines).
      if (wait && results.acked! < wait.replicas)
        throw this.#unacknowledged('renew', results.acked!)
      return flat
    })
    if (replies.length !== requests.length) {
      throw new BackendError(`redis renew: ${replies.length} answers for ${requests.length} grants`)
    }
    return replies.map((reply) => Number(reply) === 1)
  }

  /**
   * A Redis Cluster refuses a script whose keys span slots (CROSSSLOT) and a pipeline whose
   * keys span nodes: the grants are grouped by slot (one script call per slot and batch), the
   * calls by master node (one pipeline per node), and the nodes asked at once, so a tick is
   * one round trip per node.
   */
  async #renewInCluster(cluster: Cluster, requests: RenewRequest[]): Promise<boolean[]> {
    const bySlot = new Map<number, number[]>()
    requests.forEach((request, i) => {
      const slot = keySlot(request.resource)
      const list = bySlot.get(slot)
      if (list) list.push(i)
      else bySlot.set(slot, [i])
    })
    const byNode = new Map<string, number[][]>()
    for (const [slot, indexes] of bySlot) {
      // ioredis' slot table: slot -> [master key, replica keys...]; unknown yet: any group.
      const node = (cluster.slots as string[][] | undefined)?.[slot]?.[0] ?? `slot:${slot}`
      const groups = byNode.get(node)
      for (let i = 0; i < indexes.length; i += RENEW_BATCH) {
        const group = indexes.slice(i, i + RENEW_BATCH)
        if (groups) groups.push(group)
        else byNode.set(node, [group])
      }
    }
    const answers: boolean[] = new Array<boolean>(requests.length)
    const wait = this.#replicaWait()
    await this.#timed('renew', () =>
      Promise.all(
        [...byNode.values()].map(async (groups) => {
          const calls = groups.map(
            (group) =>
              renewCalls(
                this.prefix,
                group.map((i) => requests[i]!),
              )[0]!,
          )
          const results = await runPipelined(cluster, SCRIPTS.renew, calls, wait, true)
          results.forEach(([error, reply], g) => {
            if (error) throw error
            const list = asArray(reply, 'renew')
            groups[g]!.forEach((index, k) => (answers[index] = Number(list[k]) === 1))
          })
          if (wait && results.acked! < wait.replicas)
            throw this.#unacknowledged('renew', results.acked!)
        }),
      ),
    )
    return answers
  }

  /** One release.lua call: removes the grant (only with its token, if given) and publishes. */
  async release(request: ReleaseRequest): Promise<void> {
    this.#gate.check()
    validateRelease(request)
    const { keys, release } = this.#keysOf(request.resource)
    await this.#run('release', SCRIPTS.release, [
      release,
      [request.candidate, request.token === undefined ? '' : String(request.token), keys.channel],
    ])
  }

  /** One holders.lua call, which also removes (and publishes) holders that expired. */
  async holders(resource: string): Promise<Holder[]> {
    this.#gate.check()
    validateResource(resource)
    const { keys, release } = this.#keysOf(resource)
    const reply = await this.#run('holders', SCRIPTS.holders, [release, [keys.channel]])
    return parseHolders(asArray(reply, 'holders'), 0)
  }

  /**
   * Backend.waiters: one waiters.lua call, the live places in line order with what is left of
   * each on the server's clock. Read-only (an expired place is skipped, not pruned); places
   * carry no metadata, so none is reported.
   */
  async waiters(resource: string): Promise<Waiter[]> {
    this.#gate.check()
    validateResource(resource)
    const keys = resourceKeys(this.prefix, resource)
    const list = asArray(
      await this.#run('waiters', SCRIPTS.waiters, [[keys.line, keys.places], []]),
      'waiters',
    )
    const waiters: Waiter[] = []
    for (let i = 0; i + 1 < list.length; i += 2) {
      waiters.push({ candidate: String(list[i]), remainingMs: Number(list[i + 1]) })
    }
    return waiters
  }

  /** Through the backend's one subscriber connection (wakeups.ts). */
  async watch(resource: string, onChange: (change?: WatchChange) => void): Promise<Unwatch> {
    this.#gate.check()
    validateResource(resource)
    return this.#wakeups.watch(resource, onChange, this.#keysOf(resource).keys.channel)
  }

  /** The contract's onClose: `hook` runs first thing in close(), while calls still work. */
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
      this.#wakeups.close()
      if (this.#owned) this.#conn.disconnect()
    })
  }

  /** The keys of a validated resource, made at its first use (see ScriptKeys). */
  #keysOf(resource: string): ScriptKeys {
    let cached = this.#keyCache.get(resource)
    if (cached === undefined) {
      if (this.#keyCache.size >= KEY_CACHE_SIZE) this.#keyCache.clear()
      const keys = resourceKeys(this.prefix, resource)
      cached = {
        keys,
        acquire: [
          keys.holders,
          keys.grants,
          keys.token,
          keys.guard,
          keys.history,
          keys.line,
          keys.places,
        ],
        release: [keys.holders, keys.grants, keys.guard, keys.line, keys.places],
      }
      this.#keyCache.set(resource, cached)
    }
    return cached
  }

  /** Warns once if the server may evict conclave's keys (eviction.ts); asks again after no answer. */
  #checkEviction(): void {
    if (this.#evictionChecked) return
    this.#evictionChecked = true
    void checkEviction(this.#conn, (what, fn) => this.#timed(what, fn)).then(
      (settled) => (this.#evictionChecked = settled),
      () => (this.#evictionChecked = false),
    )
  }

  /** The WAIT to send after a grant or renewal, if the replicas option asks for one. */
  #replicaWait(): ReplicaWait | undefined {
    return this.replicas > 0
      ? { replicas: this.replicas, timeoutMs: this.replicaTimeoutMs }
      : undefined
  }

  #unacknowledged(what: string, acked: number): BackendError {
    return new BackendError(
      `redis ${what} on ${this.#conn.endpoint()}: acknowledged by ${acked} of the ${this.replicas} replicas required within ${this.replicaTimeoutMs} ms (the replicas option), so it does not count`,
    )
  }

  /** Backend.readRecord: the record's hash (see records.ts). */
  async readRecord(resource: string, key: string): Promise<StoredRecord | undefined> {
    this.#gate.check()
    validateResource(resource)
    validateRecordKey(key)
    const id = recordKey(this.prefix, resource, key)
    const reply = await this.#timed('readRecord', () =>
      this.#conn.hmget(id, 'version', 'token', 'value'),
    )
    return parseRecordReply(reply)
  }

  /** Backend.writeRecord: the fenced compare-and-set of scripts/write-record.lua. */
  async writeRecord(request: WriteRecordRequest): Promise<WriteRecordResult> {
    this.#gate.check()
    validateWriteRecord(request)
    const id = recordKey(this.prefix, request.resource, request.key)
    const keys = [id]
    const args = [JSON.stringify(request.value), String(request.token), String(request.version)]
    const wait = this.#replicaWait()
    if (!wait) return parseWriteReply(await this.#run('writeRecord', WRITE_RECORD, [keys, args]))
    // Acknowledged like a grant: a record a promoted replica lacks would let a fire run twice.
    const answer = await this.#timed('writeRecord', () =>
      runScriptWaiting(this.#conn.commands, WRITE_RECORD, keys, args, wait),
    )
    const result = parseWriteReply(answer.reply)
    if (result.written && answer.acked < wait.replicas) {
      throw this.#unacknowledged('writeRecord', answer.acked)
    }
    return result
  }

  /** Backend.now: the server's TIME, so fire times do not depend on this host's clock. */
  async now(): Promise<number> {
    this.#gate.check()
    return parseTime(await this.#timed('now', () => this.#conn.time()))
  }

  async #run(what: string, script: Script, [keys, args]: ScriptCall): Promise<unknown> {
    return this.#timed(what, () => runScript(this.#conn.commands, script, keys, args))
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
    try {
      return await withDeadline(fn(), this.timeoutMs, () => new TimedOut())
    } catch (error) {
      // A call cut short by close() (its connection dropped) gets the final error.
      this.#gate.check()
      if (error instanceof ConclaveError) throw error
      if (!this.#conn.cluster && isClusterReply(error)) {
        throw new RedisClusterError(
          `redis ${what} on ${this.#conn.endpoint()}: the server is a Redis Cluster node (${messageOf(error)}); give redisBackend an ioredis Cluster client (new Cluster([...]))`,
          { cause: error },
        )
      }
      const where = this.#conn.endpoint()
      // A reply is the server's own answer; anything else may be the connection failing.
      const down =
        error instanceof Error && error.name === 'ReplyError'
          ? undefined
          : connection === 'client'
            ? this.#clientError
            : this.#wakeups.connectionError
      if (error instanceof TimedOut) {
        throw new BackendTimeoutError(
          `redis ${what} on ${where}: no answer within ${this.timeoutMs} ms${down ? ` (the connection: ${down.message})` : ''}`,
          down && { cause: down },
        )
      }
      const cause = down ?? error
      throw new BackendError(`redis ${what} on ${where} failed: ${messageOf(cause)}`, { cause })
    }
  }
}

/** Why a fresh server grants nothing yet (AcquireResult's `wait`, the election's `waiting`). */
function startupGraceWait(where: string, graceMs: number): WaitReason {
  return {
    code: 'startup-grace',
    reason: `the redis server at ${where} has been up for less than the lease (${graceMs} ms) plus 1 s, and a restart may have lost grants whose holders still run: no new grant until then (startupGrace; see docs/redis.md)`,
  }
}

/** Why nothing is granted on a server whose replication history changed (a promoted replica). */
function failoverGraceWait(where: string, graceMs: number): WaitReason {
  return {
    code: 'failover-grace',
    reason: `the redis server at ${where} changed replication history (a replica was promoted) less than the longest lease (maxLeaseMs, ${graceMs} ms) ago, and it may lack grants whose holders still run: no new grant until then (failoverGrace; see docs/redis.md)`,
  }
}

/** Why nothing is granted after conclave's keys were deleted by hand (how long: retryInMs). */
function deletedKeysWait(): WaitReason {
  return {
    code: 'deleted-keys-guard',
    reason: `conclave's keys of this resource were deleted by hand while its grants may live on: no new grant until they could have expired`,
  }
}

/**
 * What #timed's deadline rejects with, replaced by a BackendTimeoutError naming the server and,
 * as its cause, the connection's error (which kit.ts's timeoutError has no room for).
 */
class TimedOut extends Error {}

/** A reply only a Redis Cluster node gives to a client that is not cluster-aware. */
function isClusterReply(error: unknown): boolean {
  return error instanceof Error && /^(MOVED|ASK|CROSSSLOT|CLUSTERDOWN) /.test(error.message)
}

/** The renew.lua calls for `requests`: one per batch of RENEW_BATCH grants. */
function renewCalls(prefix: string, requests: readonly RenewRequest[]): ScriptCall[] {
  const calls: ScriptCall[] = []
  for (let i = 0; i < requests.length; i += RENEW_BATCH) {
    const keys: string[] = []
    const args: string[] = []
    for (const request of requests.slice(i, i + RENEW_BATCH)) {
      const k = resourceKeys(prefix, request.resource)
      if (request.queued) {
        // A place in line (token 0): renew.lua keeps it, or says to ask again.
        keys.push(k.holders, k.grants, k.line, k.places)
        args.push(request.candidate, '0', String(request.leaseMs), k.channel)
      } else {
        keys.push(k.holders, k.grants, k.guard)
        args.push(request.candidate, String(request.token), String(request.leaseMs))
      }
    }
    calls.push([keys, args])
  }
  return calls
}

/** An error's message, or its name when it has none (as messages have always said it). */
function messageOf(error: unknown): string {
  return error instanceof Error ? error.message || error.name : String(error)
}

function asArray(reply: unknown, what: string): unknown[] {
  if (!Array.isArray(reply))
    throw new BackendError(`redis ${what}: unexpected reply ${typeof reply}`)
  return reply
}

/** The flat candidate, token, metadata, remainingMs list the scripts answer, from `from`. */
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
