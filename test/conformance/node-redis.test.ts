// The conformance suite through node-redis clients (the `redis` package: v6, and v5 and v4
// installed under the aliases redis5 and redis4), against a real redis-server: the same
// backend as with ioredis, through the adapter of src/backends/redis/client.ts.
import { createClient as createClient6 } from 'redis'
import { createClient as createClient5 } from 'redis5'
import { createClient as createClient4 } from 'redis4'
import { afterAll, beforeAll } from 'vitest'
import { redisBackend } from '../../src/backends/redis/index.js'
import { startRedis, type RedisServer } from '../../testkit/index.js'
import { runConformance } from './suite.js'

let server: RedisServer
const closers: (() => Promise<unknown>)[] = []

beforeAll(async () => {
  server = await startRedis()
})
// Runs after the suite's own afterAll has closed every backend.
afterAll(async () => {
  await Promise.allSettled(closers.splice(0).map((close) => close()))
  await server?.stop()
})

const versions = {
  'node-redis v6': () => createClient6({ url: server.url }),
  'node-redis v5': () => createClient5({ url: server.url }),
  'node-redis v4': () => createClient4({ url: server.url }),
}

for (const [name, make] of Object.entries(versions)) {
  // Each backend() has its own client, as separate processes would.
  runConformance(`redis (${name})`, {
    leaseMs: 500,
    backend: async () => {
      const client = make()
      client.on('error', () => {})
      await client.connect()
      closers.push(() => client.quit())
      // An empty server started for this file: no startup grace (tested in server-faults).
      return redisBackend({ client, startupGrace: false })
    },
  })
}
