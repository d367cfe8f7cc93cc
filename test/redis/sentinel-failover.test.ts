// Redis behind Sentinel (testkit/redis-sentinel.ts: 1 master, 2 replicas, 3 sentinels): a
// replica that missed the latest grant is promoted. Its uptime is long, so the startup grace
// cannot help; the failover grace (acquire.lua: the server's replication id changed) must.
import { Redis } from 'ioredis'
import { afterAll, beforeAll, expect, it } from 'vitest'
import type { AcquireResult, Backend } from '../../src/backend.js'
import { redisBackend } from '../../src/backends/redis/index.js'
import { backendFromUrl } from '../../src/cli/backends.js'
import { startSentinelTopology, type SentinelTopology } from '../../testkit/index.js'
import { fastFailingSentinelClient, sleep } from './helpers.js'

const LEASE_MS = 8_000
let topo: SentinelTopology
const clients: Redis[] = []
const backends: Backend[] = []

beforeAll(async () => {
  // Replica 0 is never promoted; replica 1 replicates through a proxy the test freezes.
  topo = await startSentinelTopology({
    replicas: [{ priority: 0 }, { proxied: true, priority: 10 }],
  })
})
afterAll(async () => {
  await Promise.allSettled(backends.map((b) => b.close()))
  for (const client of clients) client.disconnect()
  await topo?.stop()
})

function sentinelBackend(): Backend {
  const client = fastFailingSentinelClient(topo)
  clients.push(client)
  const backend = redisBackend({ client, timeoutMs: 2_000, maxLeaseMs: LEASE_MS })
  backends.push(backend)
  return backend
}

/** acquire until it answers (a failover in progress fails calls), waiting out startup grace. */
async function acquireWhenAnswered(
  backend: Backend,
  candidate: string,
  untilGranted: boolean,
): Promise<AcquireResult> {
  for (;;) {
    try {
      const result = await backend.acquire({
        resource: 'job',
        candidate,
        tickets: 1,
        leaseMs: LEASE_MS,
        metadata: null,
      })
      if (result.acquired || !untilGranted) return result
      await sleep(Math.min(result.retryInMs, 500))
    } catch {
      await sleep(100)
    }
  }
}

it('reaches the master through a redis+sentinel:// URL, replicas acknowledging each grant', async () => {
  const backend = await backendFromUrl(`${topo.url}?replicas=2&startupGrace=false`)
  backends.push(backend)
  const got = await backend.acquire({
    resource: 'by-url',
    candidate: 'u',
    tickets: 1,
    leaseMs: 5_000,
    metadata: null,
  })
  expect(got.acquired).toBe(true)
  const token = got.acquired ? got.token : 0
  expect(
    await backend.renew([{ resource: 'by-url', candidate: 'u', token, leaseMs: 5_000 }]),
  ).toEqual([true])
  // Both replicas have it (WAIT 2 answered 2).
  for (const replica of topo.replicas) {
    expect(await topo.command(replica.port, 'ZSCORE', 'conclave:{by-url}:holders', 'u')).not.toBe(
      '',
    )
  }
  await backend.release({ resource: 'by-url', candidate: 'u', token })
  await backend.close()
})

it('a promoted replica that missed the latest grant grants nothing until that grant is surely over', async () => {
  const a = sentinelBackend()
  // Wait out the startup grace of the fresh servers first: the failover grace alone is tested.
  const warm = await acquireWhenAnswered(a, 'warm-up', true)
  await a.release({ resource: 'job', candidate: 'warm-up', token: warm.acquired ? warm.token : 0 })
  // Let the release reach both replicas, then freeze replica 1's link: it misses A's grant.
  await sleep(200)
  topo.links[1]!.cut({ mode: 'blackhole' })
  const sentAt = Date.now()
  const granted = await acquireWhenAnswered(a, 'A', true)
  expect(granted.acquired).toBe(true)
  const tokenA = granted.acquired ? granted.token : 0
  await sleep(200)
  const frozen = topo.replicas[1]!
  expect(
    await topo.command(topo.replicas[0]!.port, 'ZSCORE', 'conclave:{job}:holders', 'A'),
  ).not.toBe('')
  expect(await topo.command(frozen.port, 'ZSCORE', 'conclave:{job}:holders', 'A')).toBe('')

  await topo.master.kill()
  const newPort = await topo.waitForFailover(topo.master.port)
  expect(newPort).toBe(frozen.port)

  // B asks the new master while A's lease may still run.
  const b = sentinelBackend()
  const answer = await acquireWhenAnswered(b, 'B', false)
  const answeredAt = Date.now()
  expect(answeredAt).toBeLessThan(sentAt + LEASE_MS) // else the test proves nothing
  expect(answer.acquired, 'a second holder while A may still hold').toBe(false)
  if (!answer.acquired) {
    expect(answer.retryInMs).toBeGreaterThan(0)
    // And it says why: the failover grace, not the startup grace (the server is long up).
    expect(answer.wait?.code).toBe('failover-grace')
  }
  // A resource it never saw waits too: the replica may have missed its every grant.
  const fresh = await b.acquire({
    resource: 'never-seen',
    candidate: 'B',
    tickets: 1,
    leaseMs: LEASE_MS,
    metadata: null,
  })
  expect(fresh.acquired).toBe(false)
  // A's grant is gone on the new master: its renewal fails, so nobody holds meanwhile.
  expect(
    await a.renew([{ resource: 'job', candidate: 'A', token: tokenA, leaseMs: LEASE_MS }]),
  ).toEqual([false])

  // After the grace, B gets it, with a larger token than A's.
  const later = await acquireWhenAnswered(b, 'B', true)
  expect(Date.now()).toBeGreaterThanOrEqual(sentAt + LEASE_MS)
  expect(later.acquired && later.token).toBeGreaterThan(tokenA)
}, 90_000)
