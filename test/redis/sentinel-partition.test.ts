// Redis behind Sentinel: the master is partitioned from the sentinels, the replicas and the
// other candidates, but not from the holder. Sentinel promotes a replica; the holder, still
// talking to the isolated master, must have stepped down before anyone is elected there. With
// `replicas: 1` its renewals on the isolated master are not acknowledged, so they do not count
// and its term ends at its deadline (docs/redis.md, "Sentinel").
import { Redis } from 'ioredis'
import { afterAll, beforeAll, expect, it } from 'vitest'
import type { Backend } from '../../src/backend.js'
import { redisBackend } from '../../src/backends/redis/index.js'
import { Election } from '../../src/election.js'
import { startSentinelTopology, type SentinelTopology } from '../../testkit/index.js'
import { fastFailingClient, fastFailingSentinelClient, until } from './helpers.js'

const LEASE_MS = 3_000
let topo: SentinelTopology
const clients: Redis[] = []
const backends: Backend[] = []
const elections: Election[] = []

beforeAll(async () => {
  topo = await startSentinelTopology({
    replicas: [{ proxied: true }, { proxied: true }],
    masterProxied: true,
  })
})
afterAll(async () => {
  await Promise.allSettled(elections.map((e) => e.close()))
  await Promise.allSettled(backends.map((b) => b.close()))
  for (const client of clients) client.disconnect()
  await topo?.stop()
})

function track(client: Redis, replicas: number) {
  clients.push(client)
  const backend = redisBackend({
    client,
    timeoutMs: 1_500,
    replicas,
    replicaTimeoutMs: 300,
    maxLeaseMs: LEASE_MS,
  })
  backends.push(backend)
  const election = new Election(backend, 'job', { leaseMs: LEASE_MS })
  election.on('error', () => {})
  elections.push(election)
  const record = { tokens: [] as number[], electedAt: [] as number[], endedAt: [] as number[] }
  void election.run(async (term) => {
    record.tokens.push(term.token)
    record.electedAt.push(Date.now())
    await new Promise((resolve) => term.signal.addEventListener('abort', resolve))
    record.endedAt.push(Date.now())
  })
  return { election, ...record }
}

it('with replicas: 1, the holder on an isolated master steps down before a promoted replica elects anyone', async () => {
  // The holder talks to the master's own port, so the partition leaves its path open.
  const a = track(fastFailingClient(`redis://127.0.0.1:${topo.master.port}`), 1)
  await until(() => a.tokens.length === 1, 20_000, 'A elected')
  const violations: string[] = []
  const partition = async () => {
    topo.masterLink!.cut({ mode: 'blackhole' })
    for (const link of topo.links) link!.cut({ mode: 'blackhole' })
  }
  await partition()
  await topo.waitForFailover(topo.masterLink!.port)
  const b = track(fastFailingSentinelClient(topo), 1)
  b.election.on('elected', () => {
    if (a.election.isLeader) violations.push('B elected while A is leader')
  })
  await until(() => b.tokens.length === 1, 30_000, 'B elected on the promoted replica')
  expect(violations).toEqual([])
  expect(a.endedAt.length).toBe(1)
  expect(a.endedAt[0]!).toBeLessThanOrEqual(b.electedAt[0]!)
  expect(b.tokens[0]!).toBeGreaterThan(a.tokens[0]!)
}, 90_000)
