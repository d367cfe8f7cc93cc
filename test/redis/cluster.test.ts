// The Redis backend on a Redis Cluster (testkit/redis-cluster.ts: 3 masters, 3 replicas):
// renewals across every master in one tick, a plain client refused clearly, and a master
// killed under a holder.
import { Cluster, Redis } from 'ioredis'
import { afterAll, beforeAll, expect, it } from 'vitest'
import type { Backend } from '../../src/backend.js'
import { keySlot, redisBackend } from '../../src/backends/redis/index.js'
import { Election } from '../../src/election.js'
import { backendFromUrl } from '../../src/cli/backends.js'
import { RedisClusterError } from '../../src/errors.js'
import { startRedisCluster, type RedisCluster } from '../../testkit/index.js'
import { sleep, until } from './helpers.js'

let cluster: RedisCluster
const clients: (Redis | Cluster)[] = []
const backends: Backend[] = []
const elections: Election[] = []

beforeAll(async () => {
  cluster = await startRedisCluster()
}, 60_000)
afterAll(async () => {
  await Promise.allSettled(elections.map((e) => e.close()))
  await Promise.allSettled(backends.map((b) => b.close()))
  for (const client of clients) client.disconnect()
  await cluster?.stop()
})

function clusterBackend(): Backend {
  const client = new Cluster(cluster.startupNodes, {
    redisOptions: { commandTimeout: 1_000, maxRetriesPerRequest: 1 },
  })
  client.on('error', () => {})
  clients.push(client)
  // maxLeaseMs: the longest lease of this file; the failover grace lasts it.
  const backend = redisBackend({
    client,
    startupGrace: false,
    timeoutMs: 2_000,
    maxLeaseMs: 10_000,
  })
  backends.push(backend)
  return backend
}

/** A resource name whose slot a given master serves. */
async function resourceOn(slots: [number, number][], tag: string): Promise<string> {
  for (let i = 0; ; i++) {
    const name = `${tag}-${i}`
    const slot = keySlot(name)
    if (slots.some(([from, to]) => slot >= from && slot <= to)) return name
  }
}

it('renews grants on every master in one tick', async () => {
  const b = clusterBackend()
  const masters = await cluster.masters()
  expect(masters).toHaveLength(3)
  const resources: string[] = []
  for (const [m, master] of masters.entries()) {
    for (let k = 0; k < 5; k++) resources.push(await resourceOn(master.slots, `tick-${m}-${k}`))
  }
  const requests = []
  for (const resource of resources) {
    const got = await b.acquire({
      resource,
      candidate: 'a',
      tickets: 1,
      leaseMs: 10_000,
      metadata: null,
    })
    expect(got.acquired).toBe(true)
    requests.push({
      resource,
      candidate: 'a',
      token: got.acquired ? got.token : 0,
      leaseMs: 10_000,
    })
  }
  expect(await b.renew(requests)).toEqual(requests.map(() => true))
  // A grant released meanwhile answers false, in its place.
  await b.release({ resource: resources[7]!, candidate: 'a' })
  const answers = await b.renew(requests)
  expect(answers.filter((ok) => !ok)).toHaveLength(1)
  expect(answers[7]).toBe(false)
})

it('reaches the Cluster through a redis+cluster:// URL, replicas acknowledging each grant', async () => {
  const nodes = cluster.startupNodes.slice(0, 2).map((n) => `${n.host}:${n.port}`)
  const b = await backendFromUrl(
    `redis+cluster://${nodes.join(',')}?replicas=1&replicaTimeoutMs=2000&startupGrace=false`,
  )
  backends.push(b)
  // A replica still syncing after an earlier test's failover may not acknowledge at first: the
  // grant then does not count (that is the option's point), and asking again extends it.
  const ask = () =>
    b.acquire({ resource: 'by-url', candidate: 'u', tickets: 1, leaseMs: 5_000, metadata: null })
  let got = await ask().catch((error: unknown) => error as Error)
  for (let i = 0; got instanceof Error && /acknowledged by 0/.test(got.message) && i < 10; i++) {
    await sleep(500)
    got = await ask().catch((error: unknown) => error as Error)
  }
  if (got instanceof Error) throw got
  expect(got.acquired).toBe(true)
  const token = got.acquired ? got.token : 0
  expect(await b.renew([{ resource: 'by-url', candidate: 'u', token, leaseMs: 5_000 }])).toEqual([
    true,
  ])
  await b.close()
})

it('refuses a plain client on a Cluster node with a final RedisClusterError, not endless MOVED', async () => {
  const masters = await cluster.masters()
  const [first, second] = [masters[0]!, masters[1]!]
  const client = new Redis(first.node.url, { commandTimeout: 1_000, maxRetriesPerRequest: 1 })
  client.on('error', () => {})
  clients.push(client)
  const backend = redisBackend({ client, startupGrace: false })
  backends.push(backend)
  const foreign = await resourceOn(second.slots, 'moved')
  await expect(
    backend.acquire({
      resource: foreign,
      candidate: 'a',
      tickets: 1,
      leaseMs: 1_000,
      metadata: null,
    }),
  ).rejects.toBeInstanceOf(RedisClusterError)
  const election = new Election(backend, foreign, { leaseMs: 1_000 })
  elections.push(election)
  election.on('error', () => {})
  await expect(election.campaign()).rejects.toMatchObject({ code: 'ERR_CONCLAVE_REDIS_CLUSTER' })
})

it('hears a grant deleted by hand on every master within a round trip (keyspace events are node-local)', async () => {
  // Keyspace notifications reach only the connections of the node that owns the key's slot
  // (PUBLISH is broadcast, they are not): the backend must listen on each resource's master.
  const admins = cluster.nodes.map((n) => new Redis({ host: n.host, port: n.port }))
  for (const admin of admins) admin.on('error', () => {}) // a node is killed further down
  clients.push(...admins)
  await Promise.all(admins.map((r) => r.config('SET', 'notify-keyspace-events', 'Kghx')))
  try {
    const b = clusterBackend()
    let renewals = 0
    const renew = b.renew.bind(b)
    b.renew = (requests) => (renewals++, renew(requests))
    const leaseMs = 2_000
    const masters = await cluster.masters()
    for (const [m, master] of masters.entries()) {
      const resource = await resourceOn(master.slots, `by-hand-${m}`)
      const e = new Election(b, resource, { leaseMs, renewMs: 1_600, marginMs: 100 })
      e.on('error', () => {})
      elections.push(e)
      const term = await e.campaign()
      const admin = admins[cluster.nodes.indexOf(master.node)]!
      await sleep(leaseMs / 10) // the holder's watch is made just after its win
      // A raw DEL publishes nothing on conclave's channel: only the keyspace event tells.
      await admin.del(`conclave:{${resource}}:holders`, `conclave:{${resource}}:grants`)
      const before = renewals
      expect(await term.ended).toBe('lost')
      expect({ master: m, renewals: renewals - before }).toEqual({ master: m, renewals: 0 })
      await e.close()
    }
  } finally {
    await Promise.all(admins.map((r) => r.config('SET', 'notify-keyspace-events', '')))
  }
}, 60_000)

it('a killed master fails over to its replica without two holders, tokens growing', async () => {
  const masters = await cluster.masters()
  const victim = masters[2]!
  const resource = await resourceOn(victim.slots, 'failover')
  const record = (election: Election) => {
    const r = { tokens: [] as number[] }
    void election.run(async (term) => {
      r.tokens.push(term.token)
      await new Promise((resolve) => term.signal.addEventListener('abort', resolve))
    })
    return r
  }
  const a = new Election(clusterBackend(), resource, { leaseMs: 4_000 })
  const b = new Election(clusterBackend(), resource, { leaseMs: 4_000 })
  for (const e of [a, b]) {
    e.on('error', () => {})
    elections.push(e)
  }
  const ra = record(a)
  await until(() => ra.tokens.length === 1, 10_000, 'A elected')
  const rb = record(b)
  const violations: string[] = []
  for (const [me, other] of [
    [a, b],
    [b, a],
  ] as const) {
    me.on('elected', () => {
      if (other.isLeader) violations.push('two leaders')
    })
  }
  await victim.node.kill()
  // The replica takes over the slots; someone leads again (A if its grant survived and it
  // renewed in time, else B after the failover grace), never both at once.
  await until(
    async () => (await cluster.masters()).every((m) => m.node !== victim.node),
    30_000,
    'the replica promoted',
  )
  await until(() => a.isLeader || b.isLeader, 30_000, 'a leader after the failover')
  await new Promise((resolve) => setTimeout(resolve, 2_000))
  expect(violations).toEqual([])
  expect(a.isLeader && b.isLeader).toBe(false)
  const tokens = [...ra.tokens, ...rb.tokens]
  expect(tokens).toEqual([...tokens].sort((x, y) => x - y))
}, 90_000)
