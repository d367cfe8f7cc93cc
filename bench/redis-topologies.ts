// Redis topologies side by side (issue 13): standalone, Sentinel with replicas 0/1/2, Cluster
// with replicas 0/1; uncontended acquire + release latency, and one renewal tick of 10,000
// held resources. Not part of the scenario suites (bench/scenarios.ts): those compare
// libraries on one server. Run: npx tsx bench/redis-topologies.ts
import { Cluster, Redis } from 'ioredis'
import { redisBackend } from '../src/backends/redis/index.js'
import { startRedis, startRedisCluster, startSentinelTopology } from '../testkit/index.js'

async function measure(label: string, make: () => Redis | Cluster, replicas: number) {
  const client = make()
  const b = redisBackend({ client, startupGrace: false, replicas })
  const N = 300
  const lat: number[] = []
  for (let i = 0; i < N; i++) {
    const t = performance.now()
    const r = await b.acquire({
      resource: `u${i}`,
      candidate: 'c',
      tickets: 1,
      leaseMs: 30_000,
      metadata: null,
    })
    lat.push(performance.now() - t)
    if (r.acquired) await b.release({ resource: `u${i}`, candidate: 'c', token: r.token })
  }
  lat.sort((a, b) => a - b)
  // 10,000 held resources renewed in one tick
  const held = []
  for (let i = 0; i < 10_000; i += 1) held.push(i)
  const reqs: { resource: string; candidate: string; token: number; leaseMs: number }[] = []
  for (let j = 0; j < held.length; j += 200) {
    reqs.push(
      ...(await Promise.all(
        held.slice(j, j + 200).map(async (i) => {
          const r = await b.acquire({
            resource: `h${i}`,
            candidate: 'c',
            tickets: 1,
            leaseMs: 60_000,
            metadata: null,
          })
          return {
            resource: `h${i}`,
            candidate: 'c',
            token: r.acquired ? r.token : 0,
            leaseMs: 60_000,
          }
        }),
      )),
    )
  }
  const ticks: number[] = []
  for (let k = 0; k < 10; k++) {
    const t = performance.now()
    const ok = await b.renew(reqs)
    ticks.push(performance.now() - t)
    if (!ok.every(Boolean)) throw new Error('renew failed')
  }
  ticks.sort((a, b) => a - b)
  console.log(
    `| ${label} | ${lat[N / 2]!.toFixed(2)} | ${lat[Math.floor(N * 0.99)]!.toFixed(2)} | ${ticks[5]!.toFixed(0)} |`,
  )
  await b.close()
  client.disconnect()
}

console.log('| topology | acquire p50 ms | acquire p99 ms | renew 10k tick p50 ms |')
console.log('| --- | --- | --- | --- |')
const solo = await startRedis()
await measure('standalone', () => new Redis(solo.url), 0)
await solo.stop()
const topo = await startSentinelTopology()
const sentinel = () => new Redis({ sentinels: topo.sentinelAddresses, name: topo.name })
await measure('sentinel replicas:0', sentinel, 0)
await measure('sentinel replicas:1', sentinel, 1)
await measure('sentinel replicas:2', sentinel, 2)
await topo.stop()
const cluster = await startRedisCluster()
const clusterClient = () => new Cluster(cluster.startupNodes)
await measure('cluster replicas:0', clusterClient, 0)
await measure('cluster replicas:1', clusterClient, 1)
await cluster.stop()
process.exit(0)
