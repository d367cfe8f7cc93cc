// The conformance suite on an ioredis Cluster client over a 6-node Redis Cluster (3 masters,
// 3 replicas: testkit/redis-cluster.ts). The suite's resources hash over every master.
import { Cluster } from 'ioredis'
import { afterAll, beforeAll } from 'vitest'
import { redisBackend } from '../../src/backends/redis/index.js'
import { startRedisCluster, type RedisCluster } from '../../testkit/index.js'
import { runConformance } from './suite.js'

let cluster: RedisCluster
const clients: Cluster[] = []

beforeAll(async () => {
  cluster = await startRedisCluster()
}, 60_000)
afterAll(async () => {
  for (const client of clients.splice(0)) client.disconnect()
  await cluster?.stop()
})

runConformance('redis (Cluster client)', {
  leaseMs: 500,
  backend: async () => {
    const client = new Cluster(cluster.startupNodes, {
      redisOptions: { commandTimeout: 2_000, maxRetriesPerRequest: 1 },
    })
    client.on('error', () => {})
    clients.push(client)
    // An empty cluster started for this file: no startup grace (tested in server-faults).
    return redisBackend({ client, startupGrace: false })
  },
})
