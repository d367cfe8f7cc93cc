import { Redis } from 'ioredis'
import { afterAll, beforeAll } from 'vitest'
import { redisBackend } from '../../src/backends/redis/index.js'
import { startRedis, type RedisServer } from '../../testkit/index.js'
import { runConformance } from './suite.js'

let server: RedisServer
const clients: Redis[] = []

beforeAll(async () => {
  server = await startRedis()
})
// Runs after the suite's own afterAll has closed every backend.
afterAll(async () => {
  for (const client of clients.splice(0)) client.disconnect()
  await server?.stop()
})

// Each backend() has its own client, as separate processes would.
runConformance('redis', {
  leaseMs: 500,
  backend: async () => {
    const client = new Redis(server.url, { commandTimeout: 2_000, maxRetriesPerRequest: 1 })
    clients.push(client)
    // An empty server started for this file: no startup grace (tested in server-faults).
    return redisBackend({ client, startupGrace: false })
  },
})
