// Smoke test of the bench's many-waiters scenario (bench/scenarios.ts, bench/waiters.ts) on a real
// redis-server: it runs to the end with tiny sizes and gives every row. No figure is asserted
// beyond its shape: timings belong in `npm run bench`, not in tests.
import { Redis } from 'ioredis'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { manyWaiters } from '../../bench/scenarios.js'
import { redisSubject } from '../../bench/subjects/redis.js'
import { startRedis, type RedisServer } from '../../testkit/index.js'

let server: RedisServer
let admin: Redis

beforeAll(async () => {
  server = await startRedis({ args: ['--notify-keyspace-events', 'Kghx'] })
  admin = new Redis(server.url)
})

afterAll(async () => {
  admin?.disconnect()
  await server?.stop()
})

it('measures handoffs, server requests and idle CPU with waiters in child processes', async () => {
  const subject = redisSubject('conclave/redis', {
    host: server.host,
    port: server.port,
    pid: server.pid,
    admin,
  })
  try {
    const rows = await manyWaiters.run(subject, {
      quick: true,
      log: () => {},
      many: { waiters: 6, processes: 2, leaseMs: 1_000, rounds: 2, idleLeases: 1 },
    })
    expect(rows.map((r) => r.metric)).toEqual([
      'release → next waiter holds',
      'server requests in the second after a release',
      'idle requests per waiter per lease',
      'idle CPU of the waiting processes',
    ])
    for (const row of rows) expect(row.na).toBeUndefined()
    expect(rows[0]!.samples).toBe(2)
    expect(rows[1]!.p50).toBeGreaterThan(0) // the releases and the next grants at least
    expect(Number.isFinite(rows[3]!.value)).toBe(true)
  } finally {
    await subject.close?.()
  }
}, 60_000)
