// The redis-server itself fails: paused (SIGSTOP) longer than the lease, or restarted with
// all its data lost.
import { randomBytes } from 'node:crypto'
import type { Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest'
import type { Backend } from '../../src/backend.js'
import { redisBackend } from '../../src/backends/redis/index.js'
import { Election } from '../../src/election.js'
import type { Term } from '../../src/term.js'
import { startProxy } from '../../testkit/proxy.js'
import { startRedis, type RedisServer } from '../../testkit/index.js'
import { fastFailingClient, sleep, until } from './helpers.js'

let server: RedisServer
let clients: Redis[] = []
let backends: Backend[] = []
let elections: Election[] = []

beforeAll(async () => {
  server = await startRedis()
})
afterEach(async () => {
  await Promise.all(elections.map((e) => e.close()))
  await Promise.all(backends.map((b) => b.close()))
  for (const client of clients) client.disconnect()
  ;[clients, backends, elections] = [[], [], []]
})
afterAll(async () => {
  await server?.resume()
  await server?.stop()
})

function backend(): Backend {
  const client = fastFailingClient(server.url, { commandTimeout: 300 })
  clients.push(client)
  const b = redisBackend({ client, timeoutMs: 1_000 })
  backends.push(b)
  return b
}

/** A candidate that runs until closed, recording its terms. */
function candidate(resource: string, leaseMs: number, renewMs?: number) {
  const election = new Election(backend(), resource, { leaseMs, ...(renewMs && { renewMs }) })
  election.on('error', () => {}) // errors are the point of these tests
  elections.push(election)
  const terms: Term[] = []
  void election.run(async (term) => {
    terms.push(term)
    await new Promise((resolve) => term.signal.addEventListener('abort', resolve))
  })
  return { election, terms }
}

it('ends the term before anyone else is granted when the server is paused past the lease', async () => {
  const lease = 1_000
  const resource = `pause/${randomBytes(4).toString('hex')}`
  const a = candidate(resource, lease)
  await until(() => a.terms.length === 1, 5_000, 'A elected')
  const b = candidate(resource, lease)
  const all = [a, b]

  // In-process: whenever anyone is elected, nobody else may be active. Out-of-process: a
  // separate client samples the server's holders.
  const violations: string[] = []
  for (const c of all) {
    c.election.on('elected', () => {
      const active = all.filter((x) => x.election.isLeader).length
      if (active > 1) violations.push(`${active} active terms`)
    })
  }
  const checker = backend()
  let sampling = true
  let maxHolders = 0
  let samples = 0
  const sampler = (async () => {
    while (sampling) {
      try {
        maxHolders = Math.max(maxHolders, (await checker.holders(resource)).length)
        samples++
      } catch {
        // the server is paused
      }
      await sleep(20)
    }
  })()

  const first = a.terms[0]!
  await server.pause()
  let revokedWhilePaused = false
  try {
    await until(() => first.signal.aborted, 5 * lease, "A's signal")
    revokedWhilePaused = true
    await sleep(1.5 * lease) // paused 2.5 leases in all
  } finally {
    await server.resume()
  }
  expect(revokedWhilePaused).toBe(true)
  expect(first.endReason).toBe('expired')

  await until(() => all.some((c) => c.election.isLeader), 20 * lease, 'a new term')
  await sleep(lease) // and keep sampling while it holds
  sampling = false
  await sampler
  expect(samples).toBeGreaterThan(0)
  expect(maxHolders).toBe(1)
  expect(violations).toEqual([])
  const next = [...a.terms.slice(1), ...b.terms].find((t) => t.active)!
  // The same candidate may find its grant still there (renewed as the server woke): same token.
  expect(next.token).toBeGreaterThanOrEqual(first.token)
  if (next.candidate !== first.candidate) expect(next.token).toBeGreaterThan(first.token)
})

it('keeps tokens growing and terms recovering across a restart that lost all data', async () => {
  const lease = 1_000
  const resource = `restart/${randomBytes(4).toString('hex')}`
  const a = candidate(resource, lease)
  await until(() => a.terms.length === 1, 5_000, 'A elected')
  const before = a.terms[0]!.token

  await server.restart() // SIGKILL, then a fresh process on the same port: no data, no scripts
  await until(() => a.terms.length === 2 && a.terms[1]!.active, 20 * lease, 'a term after restart')
  expect(a.terms[0]!.active).toBe(false)
  expect(a.terms[1]!.token).toBeGreaterThan(before)
  const holders = await backend().holders(resource)
  expect(holders.map((h) => h.token)).toEqual([a.terms[1]!.token])
  // The term lasts: its renewals (the script cache was lost too) keep working.
  await sleep(2 * lease)
  expect(a.terms[1]!.active).toBe(true)
  expect(a.terms).toHaveLength(2)
})

it('grants nobody while the holder from before a data-losing restart may still believe in its term', async () => {
  // A renews late in its lease, so after the restart forgets its grant it keeps believing for
  // up to two seconds; B waits, and is woken as its subscriber reconnects. Without the
  // server's startup grace B is granted at once, while A is still active.
  const lease = 3_000
  const resource = `grace/${randomBytes(4).toString('hex')}`
  const a = candidate(resource, lease, 2_000)
  // (The server may still be in its own startup grace from the previous test's restart.)
  await until(() => a.terms.length === 1, 5 * lease, 'A elected')
  const b = candidate(resource, lease)
  const all = [a, b]
  const overlaps: string[] = []
  for (const c of all) {
    c.election.on('elected', (term) => {
      const others = all.flatMap((x) => x.terms).filter((t) => t !== term && t.active)
      if (others.length > 0)
        overlaps.push(`token ${term.token} began while ${others.length} active`)
    })
  }
  const first = a.terms[0]!

  await server.restart() // SIGKILL, then a fresh process on the same port: no data
  const next = () => all.flatMap((c) => c.terms).find((t) => t !== first && t.active)
  await until(() => next() !== undefined, 10 * lease, 'a term after the restart')
  expect(first.active).toBe(false)
  expect(overlaps).toEqual([])
  expect(next()!.token).toBeGreaterThan(first.token)
}, 90_000)

/** Resolves at the next instant of the wall clock whose millisecond part is in [from, to). */
async function wallClockPhase(from: number, to: number): Promise<number> {
  for (;;) {
    const phase = Date.now() % 1_000
    if (phase >= from && phase < to) return phase
    await sleep((from - phase + 1_000) % 1_000 || 1)
  }
}

it('grants nothing before a full lease of real uptime, whatever the sub-second phase of the start', async () => {
  // INFO's uptime_in_seconds is whole seconds of wall clock now minus whole seconds at the
  // start: a server started at x.92 reads 1 at x+1.00, 80 ms later. Each round restarts the
  // server (empty) at x.90-x.95 while the holder's path is cut, so the holder believes in its
  // term until its deadline (its last renewal + lease - margin, renewing every 200 ms), and a
  // waiter asks for the resource every 20 ms.
  const lease = 2_000
  const rounds = 3
  const proxy = await startProxy({ targetPort: server.port })
  const results: {
    phase: number
    grantedAfterMs: number
    holderActive: boolean
    overlapMs: number
  }[] = []
  try {
    for (let round = 0; round < rounds; round++) {
      const resource = `phase/${round}/${randomBytes(4).toString('hex')}`
      proxy.restore()
      const holderClient = fastFailingClient(`redis://127.0.0.1:${proxy.port}`, {
        commandTimeout: 300,
      })
      clients.push(holderClient)
      const holderBackend = redisBackend({ client: holderClient, timeoutMs: 1_000 })
      backends.push(holderBackend)
      const holder = new Election(holderBackend, resource, { leaseMs: lease, renewMs: 200 })
      holder.on('error', () => {}) // the cut makes errors
      const terms: Term[] = []
      void holder.run(async (term) => {
        terms.push(term)
        await new Promise((resolve) => term.signal.addEventListener('abort', resolve))
      })
      // (It waits out the startup grace of the previous restart first.)
      await until(() => terms.length === 1, 20_000, 'the holder elected')
      const held = terms[0]!

      await wallClockPhase(850, 870)
      proxy.cut() // its last renewal reached the server at most ~200 ms ago
      await server.kill()
      const phase = await wallClockPhase(900, 950)
      const startedAt = performance.now()
      await server.restart() // not running: starts it, empty, on the same port

      const waiterClient = fastFailingClient(server.url, { commandTimeout: 300 })
      clients.push(waiterClient)
      const waiter = redisBackend({ client: waiterClient, timeoutMs: 1_000 })
      backends.push(waiter)
      let grantedAt = Infinity
      let holderActive = false
      while (performance.now() - startedAt < 20_000) {
        const got = await waiter
          .acquire({ resource, candidate: 'waiter', tickets: 1, leaseMs: lease, metadata: null })
          .catch(() => undefined)
        if (got?.acquired) {
          grantedAt = performance.now()
          holderActive = held.active // reads the clock: still inside its term?
          break
        }
        await sleep(20)
      }
      results.push({
        phase,
        grantedAfterMs: Math.round(grantedAt - startedAt),
        holderActive,
        overlapMs: Math.round(held.deadline - grantedAt),
      })
      proxy.restore()
      await holder.close()
      await waiter.release({ resource, candidate: 'waiter' })
    }
  } finally {
    await proxy.close()
  }
  // The grant came after a full lease since the start (the server cannot have answered before
  // it started), and while the holder from before was no longer active.
  const early = results.filter((r) => r.grantedAfterMs < lease || r.holderActive)
  expect(early, JSON.stringify(results)).toEqual([])
}, 120_000)
