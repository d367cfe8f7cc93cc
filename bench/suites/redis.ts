/**
 * conclave/redis against redis-semaphore (Mutex, Semaphore) and redlock, side by side on one
 * private redis-server: uncontended acquire, graceful handoff, crash failover, the cost of an
 * idle waiter, and the cost of keeping 10,000 resources held. Peers run with their defaults.
 */
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import { Mutex, Semaphore } from 'redis-semaphore'
import type { Backend } from '../../src/backend.js'
import { redisBackend } from '../../src/backends/redis/index.js'
import { Election } from '../../src/election.js'
import { startRedis } from '../../test/servers/index.js'
import { type BenchRow, type BenchSuite, summarize } from '../stats.js'

// redlock 5 beta ships types its package.json "exports" hide from NodeNext resolution: the
// little used here is typed by hand, and the import goes through a variable.
interface Redlock {
  using(resources: string[], durationMs: number, routine: () => Promise<void>): Promise<void>
  on(event: 'error', listener: (error: unknown) => void): void
}
type RedlockConstructor = new (clients: Redis[]) => Redlock
const redlockModule = 'redlock'
const { default: Redlock } = (await import(redlockModule)) as { default: RedlockConstructor }

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const key = (label: string) => `bench/${label}/${randomBytes(4).toString('hex')}`

interface Subject {
  name: string
  /** Takes the resource; resolves with a function that gives it back. */
  acquire(resource: string, leaseMs: number): Promise<() => Promise<void>>
  /** Waits until it holds; `abort` stops waiting. */
  wait(resource: string, leaseMs: number, signal: AbortSignal): Promise<() => Promise<void>>
  /** Holds the resource and makes the holder's process vanish on `crash()`. */
  crashable(resource: string, leaseMs: number): Promise<{ crash(): void; cleanup(): Promise<void> }>
  /** What the server says is left of the current grant, in ms. */
  remaining(resource: string): Promise<number>
  close(): Promise<void>
}

/** Commands sent by every client but the measuring one, counted as ioredis writes them. */
let commandsSent = 0
let uncounted: Redis | undefined
// Called with its `this` below, as ioredis itself does.
// eslint-disable-next-line @typescript-eslint/unbound-method
const sendCommand = Redis.prototype.sendCommand
function countCommands(admin: Redis): () => void {
  uncounted = admin
  Redis.prototype.sendCommand = function (this: Redis, ...args: Parameters<Redis['sendCommand']>) {
    if (this !== uncounted) commandsSent++
    return sendCommand.apply(this, args)
  }
  return () => {
    Redis.prototype.sendCommand = sendCommand
  }
}

interface Window {
  /** Commands sent by the clients under test. */
  commands: number
  serverCpuMs: number
  clientCpuMs: number
}

/** What happens during `windowMs`. */
async function observe(admin: Redis, windowMs: number): Promise<Window> {
  const serverCpu = async () => {
    const info = await admin.info('cpu')
    const field = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1])
    return (field('used_cpu_user') + field('used_cpu_sys')) * 1_000
  }
  const server0 = await serverCpu()
  const client0 = process.cpuUsage()
  const commands0 = commandsSent
  await sleep(windowMs)
  const commands = commandsSent - commands0
  const client = process.cpuUsage(client0)
  return {
    commands,
    serverCpuMs: (await serverCpu()) - server0,
    clientCpuMs: (client.user + client.system) / 1_000,
  }
}

const suite: BenchSuite = {
  name: 'redis',
  async run({ quick, log }) {
    // A server started empty for this run: conclave's backends here turn the startup grace (no
    // new grant in the server's first lease of uptime, against a restart that lost grants) off,
    // as the peers have none and no restart is measured.
    const server = await startRedis()
    const clients: Redis[] = []
    const client = () => {
      const c = new Redis(server.url, { commandTimeout: 5_000, maxRetriesPerRequest: 1 })
      c.on('error', () => {})
      clients.push(c)
      return c
    }
    const admin = client()
    const restore = countCommands(admin)
    const rows: BenchRow[] = []
    const subjects = [
      conclave(client),
      semaphoreMutex(client, admin),
      semaphore(client, admin),
      redlock(client, admin),
    ]
    try {
      for (const s of subjects) await measure(s.name, 'uncontended acquire', () => uncontended(s))
      await measure('conclave/redis backend.acquire', 'uncontended acquire', () => rawAcquire())
      for (const s of subjects) await measure(s.name, 'graceful handoff', () => handoff(s))
      for (const s of subjects) await measure(s.name, 'crash failover', () => failover(s))
      for (const s of subjects) await measure(s.name, 'idle waiter', () => idleWaiter(s))
      await measure('conclave/redis', 'renew 10k held', () => renewConclave())
      await measure('redis-semaphore Mutex', 'renew 10k held', () => renewMutex())
    } finally {
      await Promise.all(subjects.map((s) => s.close().catch(() => {})))
      restore()
      for (const c of clients) c.disconnect()
      await server.stop()
    }
    return rows

    async function measure(subject: string, what: string, fn: () => Promise<BenchRow[]>) {
      try {
        const got = await fn()
        rows.push(...got)
        for (const row of got)
          log(`${row.metric} / ${row.subject}: ${row.p50 ?? row.value} ${row.unit}`)
      } catch (error) {
        log(`${what} / ${subject} failed: ${(error as Error).message}`)
      }
    }

    async function uncontended(s: Subject): Promise<BenchRow[]> {
      const samples: number[] = []
      const resource = key('uncontended')
      const n = quick ? 200 : 2_000
      for (let i = 0; i < n + 20; i++) {
        const t0 = performance.now()
        const release = await s.acquire(resource, 10_000)
        const t1 = performance.now()
        await release()
        if (i >= 20) samples.push(t1 - t0) // after a warm-up
      }
      return [summarize('uncontended acquire', s.name, samples)]
    }

    /** The storage round trip alone, without the election core around it. */
    async function rawAcquire(): Promise<BenchRow[]> {
      const backend = redisBackend({ client: client(), startupGrace: false })
      const samples: number[] = []
      const resource = key('raw')
      const n = quick ? 200 : 2_000
      try {
        for (let i = 0; i < n + 20; i++) {
          const t0 = performance.now()
          await backend.acquire({
            resource,
            candidate: 'me',
            tickets: 1,
            leaseMs: 10_000,
            metadata: null,
          })
          const t1 = performance.now()
          await backend.release({ resource, candidate: 'me' })
          if (i >= 20) samples.push(t1 - t0)
        }
      } finally {
        await backend.close()
      }
      return [
        summarize(
          'uncontended acquire',
          'conclave/redis backend.acquire',
          samples,
          'ms',
          'the Lua script alone, no Election',
        ),
      ]
    }

    async function handoff(s: Subject): Promise<BenchRow[]> {
      const samples: number[] = []
      const resource = key('handoff')
      const n = s.name === 'redlock' ? (quick ? 5 : 30) : quick ? 30 : 200
      let release = await s.acquire(resource, 10_000)
      for (let i = 0; i < n; i++) {
        const controller = new AbortController()
        let heldAt = 0
        const waiting = s.wait(resource, 10_000, controller.signal).then((r) => {
          heldAt = performance.now()
          return r
        })
        // The waiter is now waiting; a random pause so pollers are caught at any point of their cycle.
        await sleep(20 + Math.random() * 20)
        const releasedAt = performance.now()
        await release()
        release = await waiting
        samples.push(heldAt - releasedAt)
      }
      await release()
      return [summarize('graceful handoff', s.name, samples)]
    }

    async function failover(s: Subject): Promise<BenchRow[]> {
      const lease = 1_000
      const samples: number[] = []
      const afterExpiry: number[] = []
      const n = quick ? 2 : 10
      for (let i = 0; i < n; i++) {
        const resource = key('failover')
        const holder = await s.crashable(resource, lease)
        const controller = new AbortController()
        let heldAt = 0
        const waiting = s.wait(resource, lease, controller.signal).then((r) => {
          heldAt = performance.now()
          return r
        })
        // Crash at a random point of the renewal cycle.
        await sleep(200 + Math.random() * lease)
        const crashedAt = performance.now()
        holder.crash()
        const left = await s.remaining(resource)
        const release = await waiting
        samples.push((heldAt - crashedAt) / lease)
        afterExpiry.push(heldAt - crashedAt - left)
        await release()
        await holder.cleanup()
      }
      return [
        summarize(
          'crash failover',
          s.name,
          samples,
          'x lease',
          `lease ${lease} ms, crash at a random moment, in-process`,
        ),
        summarize(
          'crash failover: takeover after expiry',
          s.name,
          afterExpiry,
          'ms',
          'from the server-side expiry of the dead grant',
        ),
      ]
    }

    /** Commands per second one waiting candidate costs, from INFO commandstats deltas. */
    async function idleWaiter(s: Subject): Promise<BenchRow[]> {
      const resource = key('idle')
      const windowMs = quick ? 1_500 : 10_000
      const waiters = 10
      const release = await s.acquire(resource, 10_000)
      await sleep(500)
      const base = await observe(admin, windowMs) // the holder alone
      const controller = new AbortController()
      const waiting = Array.from({ length: waiters }, () =>
        s.wait(resource, 10_000, controller.signal).then(
          (r) => r(),
          () => {},
        ),
      )
      await sleep(500)
      const loaded = await observe(admin, windowMs)
      controller.abort()
      await release()
      await Promise.all(waiting)
      const perSecond = ((loaded.commands - base.commands) / waiters / windowMs) * 1_000
      return [
        {
          metric: 'idle waiter',
          subject: s.name,
          unit: 'commands/s',
          value: Math.max(0, perSecond),
          samples: waiters,
          note: `holder lease 10 s, ${windowMs / 1000} s window`,
        },
      ]
    }

    async function renewConclave(): Promise<BenchRow[]> {
      const n = quick ? 2_000 : 10_000
      const lease = 3_000
      const inner = redisBackend({ client: client(), lingerMs: 0, startupGrace: false })
      const batches: { ms: number; size: number }[] = []
      const timed: Backend = Object.assign(Object.create(inner) as Backend, {
        name: inner.name,
        renew: async (requests: Parameters<Backend['renew']>[0]) => {
          const t0 = performance.now()
          const result = await inner.renew(requests)
          batches.push({ ms: performance.now() - t0, size: requests.length })
          return result
        },
        acquire: inner.acquire.bind(inner),
        release: inner.release.bind(inner),
        holders: inner.holders.bind(inner),
        watch: inner.watch.bind(inner),
        close: inner.close.bind(inner),
      })
      const prefix = key('renew')
      const elections = Array.from(
        { length: n },
        (_, i) => new Election(timed, `${prefix}/${i}`, { leaseMs: lease }),
      )
      const errors: Error[] = []
      for (const e of elections) e.on('error', (error) => errors.push(error))
      try {
        // In steps: 10,000 campaigns at once would queue acquires past their own lease.
        for (let i = 0; i < n; i += 500)
          await Promise.all(elections.slice(i, i + 500).map((e) => e.campaign()))
        await sleep(lease) // campaigns settled, renewals in step
        batches.length = 0
        const windowMs = quick ? 2_000 : 6_000
        const w = await observe(admin, windowMs)
        const full = batches.filter((b) => b.size === n)
        const ticks = Math.max(1, batches.length)
        const lost = elections.filter((e) => !e.isLeader).length
        const note = `${n} resources, lease ${lease} ms, ${ticks} ticks, ${errors.length} errors, ${lost} lost`
        return [
          summarize(
            'renew 10k: batch latency',
            'conclave/redis',
            full.map((b) => b.ms),
            'ms',
            note,
          ),
          ...renewRows(
            'conclave/redis',
            w,
            windowMs,
            ticks,
            `${Math.round(w.commands / ticks)} commands and 1 round trip per tick`,
          ),
        ]
      } finally {
        await Promise.all(elections.map((e) => e.close()))
        await inner.close()
      }
    }

    async function renewMutex(): Promise<BenchRow[]> {
      const n = quick ? 2_000 : 10_000
      const lease = 3_000
      const c = client()
      const prefix = key('renew-mutex')
      const mutexes = Array.from(
        { length: n },
        (_, i) => new Mutex(c, `${prefix}/${i}`, { lockTimeout: lease, onLockLost: () => {} }),
      )
      try {
        for (let i = 0; i < n; i += 500)
          await Promise.all(mutexes.slice(i, i + 500).map((m) => m.acquire()))
        await sleep(lease)
        const windowMs = quick ? 2_000 : 6_000
        const w = await observe(admin, windowMs)
        return renewRows(
          'redis-semaphore Mutex',
          w,
          windowMs,
          n,
          `${n} resources, lease ${lease} ms: a timer and a round trip per lock every ${0.8 * lease} ms`,
        )
      } finally {
        await Promise.all(mutexes.map((m) => m.release().catch(() => {})))
      }
    }
  },
}

function renewRows(
  subject: string,
  w: Window,
  windowMs: number,
  samples: number,
  note: string,
): BenchRow[] {
  const perSecond = (x: number) => (x / windowMs) * 1_000
  return [
    {
      metric: 'renew 10k: commands per second',
      subject,
      unit: 'commands/s',
      value: perSecond(w.commands),
      samples,
      note,
    },
    {
      metric: 'renew 10k: client CPU',
      subject,
      unit: 'ms CPU/s',
      value: perSecond(w.clientCpuMs),
      samples,
    },
    {
      metric: 'renew 10k: server CPU',
      subject,
      unit: 'ms CPU/s',
      value: perSecond(w.serverCpuMs),
      samples,
    },
  ]
}

function conclave(client: () => Redis): Subject {
  const backend = redisBackend({ client: client(), startupGrace: false })
  const elections = new Set<Election>()
  const election = (resource: string, leaseMs: number, b: Backend = backend) => {
    const e = new Election(b, resource, { leaseMs })
    e.on('error', () => {})
    elections.add(e)
    return e
  }
  // An Election is long-lived (one per candidate and resource): idle ones are reused.
  const idle = new Map<string, Election[]>()
  const hold = async (resource: string, leaseMs: number, signal?: AbortSignal) => {
    const pool = idle.get(`${resource}/${leaseMs}`) ?? []
    idle.set(`${resource}/${leaseMs}`, pool)
    const e = pool.pop() ?? election(resource, leaseMs)
    try {
      const term = await e.campaign(signal ? { signal } : {})
      return async () => {
        await term.resign()
        pool.push(e)
      }
    } catch (error) {
      pool.push(e)
      throw error
    }
  }
  return {
    name: 'conclave/redis',
    acquire: (resource, leaseMs) => hold(resource, leaseMs),
    wait: (resource, leaseMs, signal) => hold(resource, leaseMs, signal),
    async crashable(resource, leaseMs) {
      const c = client()
      const b = redisBackend({ client: c, startupGrace: false })
      const e = election(resource, leaseMs, b)
      await e.campaign()
      return {
        crash: () => c.disconnect(), // no release: the grant must expire on the server
        cleanup: async () => {
          await e.close()
          await b.close()
        },
      }
    },
    async remaining(resource) {
      return (await backend.holders(resource))[0]?.remainingMs ?? 0
    },
    async close() {
      await Promise.all([...elections].map((e) => e.close()))
      await backend.close()
    },
  }
}

function semaphoreLike(
  name: string,
  client: () => Redis,
  admin: Redis,
  keyOf: (resource: string) => string,
  make: (c: Redis, resource: string, leaseMs: number) => Mutex,
): Subject {
  const shared = client()
  const hold = async (lock: Mutex, signal?: AbortSignal) => {
    await lock.acquire(signal)
    return () => lock.release()
  }
  return {
    name,
    acquire: (resource, leaseMs) => hold(make(shared, resource, leaseMs)),
    wait: (resource, leaseMs, signal) => hold(make(shared, resource, leaseMs), signal),
    async crashable(resource, leaseMs) {
      const c = client()
      const lock = make(c, resource, leaseMs)
      await lock.acquire()
      return {
        crash: () => {
          lock.stopRefresh()
          c.disconnect()
        },
        cleanup: async () => {},
      }
    },
    remaining: async (resource) => Math.max(0, await admin.pttl(keyOf(resource))),
    async close() {},
  }
}

function semaphoreMutex(client: () => Redis, admin: Redis): Subject {
  return semaphoreLike(
    'redis-semaphore Mutex',
    client,
    admin,
    (resource) => `mutex:${resource}`,
    (c, resource, leaseMs) =>
      new Mutex(c, resource, {
        lockTimeout: leaseMs,
        acquireTimeout: 600_000,
        onLockLost: () => {},
      }),
  )
}

function semaphore(client: () => Redis, admin: Redis): Subject {
  return semaphoreLike(
    'redis-semaphore Semaphore(1)',
    client,
    admin,
    (resource) => `semaphore:${resource}`,
    (c, resource, leaseMs) =>
      new Semaphore(c, resource, 1, {
        lockTimeout: leaseMs,
        acquireTimeout: 600_000,
        onLockLost: () => {},
      }),
  )
}

function redlock(client: () => Redis, admin: Redis): Subject {
  const shared = new Redlock([client()])
  shared.on('error', () => {})
  // Held through `using`, redlock's auto-extending API, until the returned function is called.
  const hold = (lockFor: Redlock, resource: string, leaseMs: number) =>
    new Promise<() => Promise<void>>((resolve, reject) => {
      let release!: () => void
      const released = new Promise<void>((r) => (release = r))
      const done = lockFor.using([resource], leaseMs, async () => {
        resolve(async () => {
          release()
          await done.catch(() => {})
        })
        await released
      })
      done.catch(reject) // a failed acquisition; after resolve() this does nothing
    })
  return {
    name: 'redlock',
    acquire: (resource, leaseMs) => hold(shared, resource, leaseMs),
    async wait(resource, leaseMs, signal) {
      // redlock gives up after retryCount tries (default 10 x 200 ms): ask again until aborted.
      for (;;) {
        signal.throwIfAborted()
        try {
          return await hold(shared, resource, leaseMs)
        } catch (error) {
          if (signal.aborted) throw error
        }
      }
    },
    async crashable(resource, leaseMs) {
      const c = client()
      const own = new Redlock([c])
      own.on('error', () => {})
      const release = await hold(own, resource, leaseMs)
      return {
        crash: () => c.disconnect(), // its extensions now fail; no release reaches the server
        cleanup: release,
      }
    },
    remaining: async (resource) => Math.max(0, await admin.pttl(resource)),
    async close() {},
  }
}

export default suite
