// A Redis whose maxmemory-policy may evict conclave's keys gets one warning per server
// (CONCLAVE_REDIS_EVICTION): allkeys-* may evict any key, volatile-* the keys with a TTL, and
// every conclave key has one. Each policy on a real redis-server started with it.
import { randomBytes } from 'node:crypto'
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest'
import { redisBackend } from '../../src/backends/redis/index.js'
import { mayEvict } from '../../src/backends/redis/eviction.js'
import { resourceKeys } from '../../src/backends/redis/layout.js'
import { Election } from '../../src/election.js'
import { REDIS_EVICTION_WARNING } from '../../src/errors.js'
import { startRedis, type RedisServer } from '../../testkit/index.js'
import { fastFailingClient } from './helpers.js'

const warnings: (Error & { code?: string })[] = []
const onWarning = (warning: Error & { code?: string }) => {
  if (warning.code === REDIS_EVICTION_WARNING) warnings.push(warning)
}
const servers: RedisServer[] = []
const closers: (() => Promise<void> | void)[] = []
beforeAll(() => void process.on('warning', onWarning))
afterAll(async () => {
  process.off('warning', onWarning)
  await Promise.all(servers.map((s) => s.stop()))
})
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})

const POLICIES = [
  'noeviction',
  'allkeys-lru',
  'allkeys-lfu',
  'allkeys-random',
  'volatile-lru',
  'volatile-lfu',
  'volatile-random',
  'volatile-ttl',
]

/** Campaigns twice (two backends, one server) and returns the warnings about that server. */
async function campaignOn(server: RedisServer) {
  const resource = `evict/${randomBytes(4).toString('hex')}`
  for (let i = 0; i < 2; i++) {
    const client = fastFailingClient(server.url, { commandTimeout: 5_000 })
    const backend = redisBackend({ client, startupGrace: false })
    const election = new Election(backend, resource, { leaseMs: 5_000 })
    closers.push(
      () => client.disconnect(),
      () => backend.close(),
      () => election.close(),
    )
    await election.campaign()
    await election.close()
  }
  // The warning is emitted on the next tick after the CONFIG GET answers.
  await new Promise((resolve) => setTimeout(resolve, 100))
  return warnings.filter((w) => w.message.includes(`127.0.0.1:${server.port}`))
}

it('warns once per server for every policy but noeviction, naming the policy and the fix', async () => {
  const started = await Promise.all(
    POLICIES.map((policy) =>
      startRedis({ args: ['--maxmemory', '64mb', '--maxmemory-policy', policy] }),
    ),
  )
  servers.push(...started)
  for (const [i, policy] of POLICIES.entries()) {
    const seen = await campaignOn(started[i]!)
    if (policy === 'noeviction') {
      expect(seen, policy).toEqual([])
      continue
    }
    expect(seen, policy).toHaveLength(1)
    expect(seen[0]!.name).toBe('ConclaveWarning')
    expect(seen[0]!.message).toContain(`maxmemory-policy "${policy}"`)
    expect(seen[0]!.message).toContain('Set maxmemory-policy noeviction')
    if (policy.startsWith('volatile-'))
      expect(seen[0]!.message).toMatch(/keys that have a TTL .* every key conclave writes has one/)
  }
  expect(POLICIES.filter(mayEvict)).toEqual(POLICIES.slice(1))
})

it('is right that volatile-* policies apply: every key conclave writes has a TTL', async () => {
  const server = await startRedis()
  servers.push(server)
  const client = fastFailingClient(server.url, { commandTimeout: 5_000 })
  const backend = redisBackend({ client, startupGrace: false })
  closers.push(
    () => client.disconnect(),
    () => backend.close(),
  )
  const resource = `evict/${randomBytes(4).toString('hex')}`
  const election = new Election(backend, resource, { leaseMs: 5_000 })
  closers.push(() => election.close())
  await election.campaign()
  const keys = await client.keys('*')
  const mine = Object.values(resourceKeys(backend.prefix, resource)).filter(
    (k): k is string => typeof k === 'string' && keys.includes(k),
  )
  expect(mine.length).toBeGreaterThanOrEqual(4) // holders, grants, token, guard
  for (const key of keys) expect(await client.pttl(key), key).toBeGreaterThan(0)
})
