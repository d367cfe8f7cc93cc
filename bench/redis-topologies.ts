// Redis topologies side by side (issue 13): standalone, Sentinel with replicas 0/1/2, Cluster
// with replicas 0/1; uncontended acquire + release latency, and one renewal tick of 10,000
// held resources, a graceful handoff (the holder resigns, a waiting candidate is elected by
// push) for standalone, Sentinel replicas:1 and Cluster, and on the Cluster the renew tick's
// pipelines (one round trip each) and script calls per master. Not part of the scenario suites (bench/scenarios.ts): those compare
// libraries on one server. Run: npx tsx bench/redis-topologies.ts
import { Cluster, Redis } from 'ioredis'
import { redisBackend } from '../src/backends/redis/index.js'
import { Election } from '../src/election.js'
import { startRedis, startRedisCluster, startSentinelTopology } from '../testkit/index.js'

const pct = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!

/** Resign -> the waiting candidate (another backend) elected, p50/p99 over `runs` handoffs. */
async function handoff(make: () => Redis | Cluster, replicas: number): Promise<string> {
  const clients = [make(), make()]
  const [a, b] = clients.map((client) => redisBackend({ client, startupGrace: false, replicas }))
  const runs = 40
  const lat: number[] = []
  for (let i = 0; i < runs; i++) {
    const resource = `handoff${i}`
    const ea = new Election(a!, resource, { leaseMs: 5_000 })
    const eb = new Election(b!, resource, { leaseMs: 5_000 })
    for (const e of [ea, eb]) e.on('error', () => {})
    const term = await ea.campaign()
    const waiting = eb.campaign()
    await new Promise((resolve) => setTimeout(resolve, 50)) // b is waiting, watching
    const t = performance.now()
    await term.resign()
    await waiting
    lat.push(performance.now() - t)
    await Promise.all([ea.close(), eb.close()])
  }
  lat.sort((x, y) => x - y)
  await Promise.all([a!.close(), b!.close()])
  for (const client of clients) client.disconnect()
  return `${pct(lat, 0.5).toFixed(2)} | ${pct(lat, 0.99).toFixed(2)}`
}

/** calls of a command on one server so far (INFO commandstats). */
async function calls(node: Redis, command: string): Promise<number> {
  const info = await node.info('commandstats')
  return Number(new RegExp(`cmdstat_${command}:calls=(\\d+)`).exec(info)?.[1] ?? 0)
}

async function measure(
  label: string,
  make: () => Redis | Cluster,
  replicas: number,
  withHandoff = false,
) {
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
  // On a Cluster: pipelines per tick (client side; the backend sends one per master) and the
  // script calls each master ran per tick (server side).
  let pipelines = 0
  const masters = client.isCluster ? (client as Cluster).nodes('master') : []
  const before = await Promise.all(masters.map((m) => calls(m, 'evalsha')))
  if (client.isCluster) {
    const pipeline = client.pipeline.bind(client)
    client.pipeline = (...args: Parameters<typeof pipeline>) => (pipelines++, pipeline(...args))
  }
  for (let k = 0; k < 10; k++) {
    const t = performance.now()
    const ok = await b.renew(reqs)
    ticks.push(performance.now() - t)
    if (!ok.every(Boolean)) throw new Error('renew failed')
  }
  ticks.sort((a, b) => a - b)
  const after = await Promise.all(masters.map((m) => calls(m, 'evalsha')))
  const handoffs = withHandoff ? await handoff(make, replicas) : '– | –'
  console.log(
    `| ${label} | ${lat[N / 2]!.toFixed(2)} | ${lat[Math.floor(N * 0.99)]!.toFixed(2)} | ${ticks[5]!.toFixed(0)} | ${handoffs} |`,
  )
  if (masters.length > 0) {
    const per = masters.map(
      (m, i) => `${m.options.host}:${m.options.port} ${(after[i]! - before[i]!) / 10} scripts`,
    )
    perNode.push(`${label}: ${pipelines / 10} pipelines per tick; per master: ${per.join(', ')}`)
  }
  await b.close()
  client.disconnect()
}

const perNode: string[] = []
console.log(
  '| topology | acquire p50 ms | acquire p99 ms | renew 10k tick p50 ms | handoff p50 ms | handoff p99 ms |',
)
console.log('| --- | --- | --- | --- | --- | --- |')
const solo = await startRedis()
await measure('standalone', () => new Redis(solo.url), 0, true)
await solo.stop()
const topo = await startSentinelTopology()
const sentinel = () => new Redis({ sentinels: topo.sentinelAddresses, name: topo.name })
await measure('sentinel replicas:0', sentinel, 0)
await measure('sentinel replicas:1', sentinel, 1, true)
await measure('sentinel replicas:2', sentinel, 2)
await topo.stop()
const cluster = await startRedisCluster()
const clusterClient = () => new Cluster(cluster.startupNodes)
await measure('cluster replicas:0', clusterClient, 0, true)
await measure('cluster replicas:1', clusterClient, 1)
await cluster.stop()
console.log(`\nRenew tick of 10,000 resources on the Cluster:\n${perNode.join('\n')}`)
process.exit(0)
