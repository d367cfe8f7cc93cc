// Mixed leases across a Sentinel failover: holder A has a long lease, candidate B asks with a
// short one. The promoted replica missed A's grant, so its failover grace must last A's lease
// (the backend's maxLeaseMs), not B's: a grace of B's lease would grant B while A's term runs.
// Topology: testkit/redis-sentinel.ts (1 master, 2 replicas, 3 sentinels); replica 1, the one
// promoted, replicates through a proxy the test freezes before A's grant.
import { Redis } from 'ioredis'
import { afterAll, beforeAll, expect, it } from 'vitest'
import type { AcquireResult, Backend } from '../../src/backend.js'
import { redisBackend } from '../../src/backends/redis/index.js'
import { startSentinelTopology, type SentinelTopology } from '../../testkit/index.js'
import { fastFailingSentinelClient, sleep } from './helpers.js'

/** A's lease, and the longest lease of every candidate (maxLeaseMs). */
const LONG_MS = 12_000
/** B's lease: a grace of this length would end long before A's term. */
const SHORT_MS = 1_000
let topo: SentinelTopology
const clients: Redis[] = []
const backends: Backend[] = []

beforeAll(async () => {
  topo = await startSentinelTopology({
    replicas: [{ priority: 0 }, { proxied: true, priority: 10 }],
  })
})
afterAll(async () => {
  await Promise.allSettled(backends.map((b) => b.close()))
  for (const client of clients) client.disconnect()
  await topo?.stop()
})

/** A backend through the sentinels; every candidate's names the same maxLeaseMs. */
function sentinelBackend(): Backend {
  const client = fastFailingSentinelClient(topo)
  clients.push(client)
  // The servers are fresh and empty: the startup grace is not under test here.
  const backend = redisBackend({
    client,
    timeoutMs: 2_000,
    startupGrace: false,
    maxLeaseMs: LONG_MS,
  })
  backends.push(backend)
  return backend
}

/** One acquire that answers (calls fail while the failover is under way: asked again). */
async function ask(backend: Backend, candidate: string, leaseMs: number): Promise<AcquireResult> {
  for (;;) {
    try {
      return await backend.acquire({
        resource: 'job',
        candidate,
        tickets: 1,
        leaseMs,
        metadata: null,
      })
    } catch {
      await sleep(100)
    }
  }
}

it('a short-lease candidate waits out the long lease of a grant the promoted replica missed', async () => {
  const a = sentinelBackend()
  // Freeze replica 1's link: it misses A's grant, then is promoted.
  await sleep(200)
  topo.links[1]!.cut({ mode: 'blackhole' })
  const sentAt = Date.now()
  const granted = await ask(a, 'A', LONG_MS)
  expect(granted.acquired).toBe(true)
  const tokenA = granted.acquired ? granted.token : 0
  await sleep(200)
  const frozen = topo.replicas[1]!
  expect(await topo.command(frozen.port, 'ZSCORE', 'conclave:{job}:holders', 'A')).toBe('')

  await topo.master.kill()
  expect(await topo.waitForFailover(topo.master.port)).toBe(frozen.port)

  // B asks with its short lease, again and again, until A's long lease is surely over.
  const b = sentinelBackend()
  const codes = new Set<string>()
  let firstRefused: boolean | undefined
  let firstAt = 0
  let grantedAt = 0
  for (;;) {
    const answer = await ask(b, 'B', SHORT_MS)
    if (firstRefused === undefined) [firstRefused, firstAt] = [!answer.acquired, Date.now()]
    if (!answer.acquired && answer.wait) codes.add(answer.wait.code)
    if (answer.acquired) {
      grantedAt = Date.now()
      expect(answer.token).toBeGreaterThan(tokenA)
      break
    }
    await sleep(Math.min(answer.retryInMs, 250))
  }
  // B first asked while A's term may still run (else the test proves nothing) and was refused.
  expect(firstAt - sentAt).toBeLessThan(LONG_MS)
  expect(firstRefused, 'B granted at its first ask, while A may still hold').toBe(true)
  expect(codes).toContain('failover-grace')
  // Never before A's grant could have expired: A's lease ran from before sentAt.
  expect(grantedAt - sentAt, 'B granted while A may still hold').toBeGreaterThanOrEqual(LONG_MS)
}, 90_000)

it('refuses a lease longer than maxLeaseMs (a grace could not cover it), naming leaseMs', async () => {
  const backend = sentinelBackend()
  await expect(
    backend.acquire({
      resource: 'long',
      candidate: 'C',
      tickets: 1,
      leaseMs: LONG_MS + 1,
      metadata: null,
    }),
  ).rejects.toMatchObject({ field: 'leaseMs', value: LONG_MS + 1 })
  await expect(
    backend.renew([{ resource: 'long', candidate: 'C', token: 1, leaseMs: LONG_MS + 1 }]),
  ).rejects.toMatchObject({ field: 'leaseMs' })
})
