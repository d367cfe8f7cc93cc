/**
 * The Redis backend: one Lua script per operation (expiry and tokens on the server's TIME),
 * keys hash-tagged per resource (one slot per script call, Redis Cluster safe), pub/sub on a
 * per-resource channel to wake waiters through one shared subscriber connection (wakeups.ts).
 * The same connection listens to the keys' keyspace notifications, when the server sends them,
 * so a grant deleted by hand (a raw DEL, which publishes nothing) wakes the watchers too.
 *
 * ioredis is an optional peer dependency: only types are imported statically; `{ url }` loads
 * it when the backend is made (and fails at once with a MissingPeerError without it).
 */
import type { Redis } from 'ioredis'
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
  WriteRecordRequest,
  WriteRecordResult,
} from '../../backend.js'
import {
  BackendError,
  BackendTimeoutError,
  ConclaveError,
  TicketsMismatchError,
} from '../../errors.js'
import {
  validateAcquire,
  validateRelease,
  validateRecordKey,
  validateRenew,
  validateResource,
  validateWriteRecord,
} from '../../validate.js'
import { CloseGate, requirePeer, withDeadline } from '../kit.js'
import { resourceKeys, TOKEN_TTL_MS } from './layout.js'
import {
  endpoint,
  OWNED_CLIENT_DEFAULTS,
  type RedisBackendOptions,
  resolveRedisOptions,
} from './options.js'
import { defineScript, runPipelined, runScript, type Script, type ScriptCall } from './scripts.js'
import acquireLua from './scripts/acquire.lua.js'
import holdersLua from './scripts/holders.lua.js'
import releaseLua from './scripts/release.lua.js'
import renewLua from './scripts/renew.lua.js'
import { Wakeups } from './wakeups.js'
import { parseRecordReply, parseTime, parseWriteReply, recordKey, WRITE_RECORD } from './records.js'

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
  readonly #owned: boolean
  readonly #client: Redis
  /** The last connection error of a client the backend made, until it is ready again. */
  #clientError: Error | undefined
  readonly #gate = new CloseGate('redis')
  readonly #wakeups: Wakeups

  /** Checks every option first (see options.ts); makes a client only for `{ url }`. */
  constructor(options: RedisBackendOptions) {
    const resolved = resolveRedisOptions(options)
    this.prefix = resolved.prefix
    this.timeoutMs = resolved.timeoutMs
    this.lingerMs = resolved.lingerMs
    this.heartbeatMs = resolved.heartbeatMs
    this.startupGrace = resolved.startupGrace
    if (resolved.client !== undefined) {
      this.#owned = false
      this.#client = resolved.client
    } else {
      const { Redis: Client } = requirePeer<typeof import('ioredis')>(
        'ioredis',
        'redisBackend({ url })',
      )
      this.#owned = true
      const owned = new Client(resolved.url!, {
        ...OWNED_CLIENT_DEFAULTS,
        ...resolved.clientOptions,
      })
      // Failures reach the election through the operations, which name this error as their
      // cause (ioredis itself rejects them only with "max retries per request"); ioredis
      // reconnects by itself.
      owned.on('error', (error: Error) => (this.#clientError = error))
      owned.on('ready', () => (this.#clientError = undefined))
      this.#client = owned
    }
    this.#wakeups = new Wakeups({
      client: this.#client,
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
    const keys = resourceKeys(this.prefix, request.resource)
    const reply = await this.#run('acquire', SCRIPTS.acquire, [
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

  /** Every grant of one renewal tick in one pipelined round trip, batched per script call. */
  async renew(requests: RenewRequest[]): Promise<boolean[]> {
    this.#gate.check()
    requests.forEach(validateRenew)
    if (requests.length === 0) return []
    const script = SCRIPTS.renew
    // One script call per batch of grants: 10,000 renewals are 10 commands, not 10,000, and no
    // single call holds the server for long.
    const calls: ScriptCall[] = []
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
      // One pipeline: one round trip for every batch. After a flushed script cache it is run
      // again, which is harmless: a renewal only sets the same lease again.
      const results = await runPipelined(this.#client, script, calls)
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

  /** One release.lua call: removes the grant (only with its token, if given) and publishes. */
  async release(request: ReleaseRequest): Promise<void> {
    this.#gate.check()
    validateRelease(request)
    const keys = resourceKeys(this.prefix, request.resource)
    await this.#run('release', SCRIPTS.release, [
      [keys.holders, keys.grants, keys.guard],
      [request.candidate, request.token === undefined ? '' : String(request.token), keys.channel],
    ])
  }

  /** One holders.lua call, which also removes (and publishes) holders that expired. */
  async holders(resource: string): Promise<Holder[]> {
    this.#gate.check()
    validateResource(resource)
    const keys = resourceKeys(this.prefix, resource)
    const reply = await this.#run('holders', SCRIPTS.holders, [
      [keys.holders, keys.grants, keys.guard],
      [keys.channel],
    ])
    return parseHolders(asArray(reply, 'holders'), 0)
  }

  /** Through the backend's one subscriber connection (wakeups.ts). */
  async watch(resource: string, onChange: () => void): Promise<Unwatch> {
    this.#gate.check()
    validateResource(resource)
    return this.#wakeups.watch(resource, onChange)
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
      if (this.#owned) this.#client.disconnect()
    })
  }

  /** Backend.readRecord: the record's hash (see records.ts). */
  async readRecord(resource: string, key: string): Promise<StoredRecord | undefined> {
    this.#gate.check()
    validateResource(resource)
    validateRecordKey(key)
    const id = recordKey(this.prefix, resource, key)
    const reply = await this.#timed('readRecord', () =>
      this.#client.hmget(id, 'version', 'token', 'value'),
    )
    return parseRecordReply(reply)
  }

  /** Backend.writeRecord: the fenced compare-and-set of scripts/write-record.lua. */
  async writeRecord(request: WriteRecordRequest): Promise<WriteRecordResult> {
    this.#gate.check()
    validateWriteRecord(request)
    const id = recordKey(this.prefix, request.resource, request.key)
    const reply = await this.#run('writeRecord', WRITE_RECORD, [
      [id],
      [JSON.stringify(request.value), String(request.token), String(request.version)],
    ])
    return parseWriteReply(reply)
  }

  /** Backend.now: the server's TIME, so fire times do not depend on this host's clock. */
  async now(): Promise<number> {
    this.#gate.check()
    return parseTime(await this.#timed('now', () => this.#client.time()))
  }

  async #run(what: string, script: Script, [keys, args]: ScriptCall): Promise<unknown> {
    return this.#timed(what, () => runScript(this.#client, script, keys, args))
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
      const where = endpoint(this.#client)
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

/**
 * What #timed's deadline rejects with, replaced by a BackendTimeoutError naming the server and,
 * as its cause, the connection's error (which kit.ts's timeoutError has no room for).
 */
class TimedOut extends Error {}

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
