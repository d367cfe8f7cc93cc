/**
 * The Redis subjects, all on one private redis-server: conclave/redis, redis-semaphore's Mutex
 * and Semaphore(1), and redlock (one instance, its auto-extending `using`). Peers run with their
 * defaults. A request is one command a client sent (a script call is one, however many
 * commands it runs on the server), counted as ioredis writes it.
 */
import { Redis } from 'ioredis'
import { Mutex, Semaphore } from 'redis-semaphore'
import type { RedisBackend } from '../../src/backends/redis/index.js'
import { redisBackend } from '../../src/backends/redis/index.js'
import {
  type HoldInChild,
  type HolderConfig,
  now,
  processCpuMs,
  spawnHolder,
  spawnWaiters,
  type WaitersConfig,
  within,
} from '../probes.js'
import type { Candidate, Release, Subject } from '../scenarios.js'
import { conclaveSubject, expiryFromHolders, holderId, holdWithElection } from './conclave.js'

// redlock 5 beta ships types its package.json "exports" hide from NodeNext resolution: the
// little used here is typed by hand, and the import goes through a variable.
interface Redlock {
  using(
    resources: string[],
    durationMs: number,
    routine: (signal: AbortSignal) => Promise<void>,
  ): Promise<void>
  on(event: 'error', listener: (error: unknown) => void): void
}
type RedlockConstructor = new (clients: Redis[]) => Redlock
const redlockModule = 'redlock'
const { default: Redlock } = (await import(redlockModule)) as { default: RedlockConstructor }

/** The server the subjects share, and the bench's own connection to it. */
export interface RedisTarget {
  host: string
  port: number
  pid: number
  /** The bench's own probes (PTTL): not counted as a subject's requests. */
  admin: Redis
}

const url = (host: string, port: number) => `redis://${host}:${port}`

/** A peer's client: ioredis defaults, errors left to the library's own handling. */
function peerClient(host: string, port: number): Redis {
  const c = new Redis(url(host, port))
  c.on('error', () => {})
  return c
}

/** Commands sent by every ioredis client of this process but the bench's own probes. */
let sent = 0
const uncounted = new WeakSet<Redis>()
// Called with its `this` below, as ioredis itself does; patched once for the whole process.
// eslint-disable-next-line @typescript-eslint/unbound-method
const sendCommand = Redis.prototype.sendCommand
Redis.prototype.sendCommand = function (this: Redis, ...args: Parameters<Redis['sendCommand']>) {
  if (!uncounted.has(this)) sent++
  return sendCommand.apply(this, args)
}

/**
 * The requests the server receives from every client (every process), read from a MONITOR
 * connection: a script call counts one, as on the client side (INFO commandstats would count
 * each command a script runs as well). A reading first sends a marker through `admin` and waits
 * for the monitor to echo it, so every request the server ran before the reading is counted.
 */
function serverMonitor(target: RedisTarget) {
  let counted = 0
  let markers = 0
  let seen = 0
  const waiting = new Map<number, () => void>()
  let started: Promise<{ disconnect(): void }> | undefined
  const start = () =>
    (started ??= (async () => {
      const client = new Redis(url(target.host, target.port), { lazyConnect: true })
      client.on('error', () => {})
      // A connection of its own, in monitor mode; `client` itself never connects.
      const monitor = await client.monitor()
      monitor.on('error', () => {})
      monitor.on('monitor', (_time: string, args: string[], source: string) => {
        const marker = /^bench-marker-(\d+)$/.exec(args[1] ?? '')
        if (args[0]?.toLowerCase() === 'echo' && marker) {
          seen = Number(marker[1])
          waiting.get(seen)?.()
          waiting.delete(seen)
          return
        }
        if (source !== 'lua') counted++
      })
      client.disconnect()
      return monitor
    })())
  return {
    async requests() {
      await start()
      const n = ++markers
      const echoed = new Promise<void>((resolve) => waiting.set(n, resolve))
      await target.admin.echo(`bench-marker-${n}`)
      await within(echoed, 10_000, 'the MONITOR echo of a marker')
      return counted
    },
    async close() {
      if (started) (await started).disconnect()
    },
  }
}

/** What every Redis subject shares: the request counts and the server's CPU. */
function probes(target: RedisTarget) {
  uncounted.add(target.admin)
  const monitor = serverMonitor(target)
  return {
    requests: async () => sent,
    serverRequests: () => monitor.requests(),
    closeMonitor: () => monitor.close(),
    serverCpuMs: async () => processCpuMs(target.pid),
    serverPort: target.port,
  }
}

type Make = (client: Redis, resource: string, leaseMs: number, onLost: () => void) => Mutex

const mutex: Make = (client, resource, leaseMs, onLost) =>
  new Mutex(client, resource, { lockTimeout: leaseMs, acquireTimeout: 600_000, onLockLost: onLost })
const semaphore: Make = (client, resource, leaseMs, onLost) =>
  new Semaphore(client, resource, 1, {
    lockTimeout: leaseMs,
    acquireTimeout: 600_000,
    onLockLost: onLost,
  })

/** Holds through redlock's `using` (auto-extended) until the returned release is called. */
function redlockHold(
  redlock: Redlock,
  resource: string,
  leaseMs: number,
  onLost: () => void,
): Promise<Release> {
  return new Promise((resolve, reject) => {
    let release!: () => void
    const released = new Promise<void>((r) => (release = r))
    const done = redlock.using([resource], leaseMs, async (signal) => {
      signal.addEventListener('abort', onLost)
      resolve(async () => {
        signal.removeEventListener('abort', onLost)
        release()
        await done.catch(() => {})
      })
      await released
    })
    done.catch(reject) // a failed acquisition; after resolve() this does nothing
  })
}

/** The subject names of this module, as the suite lists them. */
export const REDIS_SUBJECTS = [
  'conclave/redis',
  'redis-semaphore Mutex',
  'redis-semaphore Semaphore(1)',
  'redlock',
] as const

/** One of the Redis subjects on `target`. */
export function redisSubject(name: (typeof REDIS_SUBJECTS)[number], target: RedisTarget): Subject {
  const p = probes(target)
  const ids = new Map<string, string>()
  const leases = new Map<string, number>()
  const spawn = (resource: string, leaseMs: number, via?: { port: number }) => {
    const id = holderId()
    ids.set(resource, id)
    leases.set(resource, leaseMs)
    const config: HolderConfig = {
      subject: name,
      resource,
      leaseMs,
      id,
      host: target.host,
      port: via?.port ?? target.port,
    }
    return spawnHolder('redis', config)
  }
  const common = {
    name,
    requests: p.requests,
    serverRequests: p.serverRequests,
    serverCpuMs: p.serverCpuMs,
    serverPort: p.serverPort,
    spawnHolder: spawn,
  }
  if (name === 'conclave/redis') {
    let probe: RedisBackend | undefined
    return conclaveSubject({
      ...common,
      // A server started empty for this run: the startup grace (no new grant in a server's
      // first lease of uptime, against a restart that lost grants) is off, as peers have none.
      open() {
        const backend = redisBackend({ url: url(target.host, target.port), startupGrace: false })
        return { backend, close: () => backend.close() }
      },
      spawnWaiters: (resource, count, leaseMs, startInFlight) =>
        spawnWaiters('redis', {
          subject: name,
          resource,
          leaseMs,
          count,
          startInFlight,
          host: target.host,
          port: target.port,
        }),
      expiry: expiryFromHolders(
        () => (probe ??= redisBackend({ client: target.admin, startupGrace: false })),
        ids,
      ),
      close: async () => {
        await p.closeMonitor()
        await probe?.close()
      },
    })
  }
  // The server-side expiry of a peer's key: its PTTL right after the kill.
  const expiryOf =
    (key: (resource: string) => string) => async (resource: string, killed: Promise<void>) => {
      await killed
      const askedAt = now()
      const left = await target.admin.pttl(key(resource))
      if (left < 0) throw new Error(`the killed holder of ${resource} had no key left`)
      return askedAt + left
    }
  if (name === 'redlock') {
    return {
      ...common,
      async candidate(): Promise<Candidate> {
        const client = peerClient(target.host, target.port)
        const redlock = new Redlock([client])
        redlock.on('error', () => {})
        let lost = 0
        return {
          async acquire(resource, leaseMs, signal) {
            // redlock gives up after retryCount tries (default 10 x 200 ms): ask again until aborted.
            for (;;) {
              signal?.throwIfAborted()
              try {
                const release = await redlockHold(redlock, resource, leaseMs, () => lost++)
                if (!signal?.aborted) return release
                await release()
              } catch (error) {
                if (signal?.aborted) throw error
              }
            }
          },
          lost: () => lost,
          close: async () => void client.disconnect(),
        }
      },
      expiry: expiryOf((resource) => resource),
    }
  }
  const make = name === 'redis-semaphore Mutex' ? mutex : semaphore
  return {
    ...common,
    async candidate(): Promise<Candidate> {
      const client = peerClient(target.host, target.port)
      let lost = 0
      return {
        async acquire(resource, leaseMs, signal) {
          const lock = make(client, resource, leaseMs, () => lost++)
          await lock.acquire(signal)
          return () => lock.release()
        },
        lost: () => lost,
        close: async () => void client.disconnect(),
      }
    },
    expiry:
      name === 'redis-semaphore Mutex'
        ? expiryOf((resource) => `mutex:${resource}`)
        : // A Semaphore's entry expires by its score (the holder's Date.now() at its last
          // refresh) + lockTimeout, compared with each waiter's clock; the key's PTTL runs later.
          async (resource, killed) => {
            await killed
            const [, score] = await target.admin.zrange(
              `semaphore:${resource}`,
              '0',
              '0',
              'WITHSCORES',
            )
            if (score === undefined)
              throw new Error(`the killed holder of ${resource} had no entry`)
            return Number(score) + leases.get(resource)! + (now() - Date.now())
          },
  }
}

/** In a holder process: the subject named in `config`, holding `config.resource`. */
export const holdInChild: HoldInChild = async (config, onLost) => {
  const host = String(config.host)
  const port = Number(config.port)
  if (config.subject === 'conclave/redis') {
    const backend = redisBackend({ url: url(host, port), startupGrace: false })
    return holdWithElection(backend, config, onLost)
  }
  const client = peerClient(host, port)
  if (config.subject === 'redlock') {
    const redlock = new Redlock([client])
    redlock.on('error', () => {})
    await redlockHold(redlock, config.resource, config.leaseMs, onLost)
    return
  }
  const make = config.subject === 'redis-semaphore Mutex' ? mutex : semaphore
  await make(client, config.resource, config.leaseMs, onLost).acquire()
}

/** In a waiter process: the backend its candidates share. */
export const waitersBackend = (config: WaitersConfig) =>
  redisBackend({ url: url(String(config.host), Number(config.port)), startupGrace: false })
