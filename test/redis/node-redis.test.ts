// node-redis clients (`redis` v6, and v5/v4 under the aliases redis5/redis4) behind the Redis
// backend, against real redis-servers: the clients refused with an OptionsError, the wake-ups
// after the subscriber connection is killed, WAIT with a real replica, a flushed script cache,
// a RESP3 client, and the eviction warning read through node-redis. The conformance suite runs
// with every version in test/conformance/node-redis.test.ts.
import { randomBytes } from 'node:crypto'
import { createClient, createClientPool, createCluster, createSentinel } from 'redis'
import { createClient as createClient4, createCluster as createCluster4 } from 'redis4'
import { createClient as createClient5 } from 'redis5'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Backend } from '../../src/backend.js'
import { redisBackend } from '../../src/backends/redis/index.js'
import { OptionsError, REDIS_EVICTION_WARNING, StaleTokenError } from '../../src/errors.js'
import { fencedWrite } from '../../src/fence/redis.js'
import { startRedis, type RedisServer } from '../../testkit/index.js'
import { until } from './helpers.js'

let server: RedisServer
const closers: (() => unknown)[] = []

beforeAll(async () => {
  server = await startRedis()
})
afterAll(async () => {
  for (const close of closers.splice(0).reverse()) await Promise.resolve(close()).catch(() => {})
  await server?.stop()
})

type AnyClient = ReturnType<typeof createClient> | ReturnType<typeof createClient4>
/** What connected() needs of a client of any version and protocol. */
interface Connectable {
  on(event: 'error', listener: () => void): unknown
  connect(): Promise<unknown>
  quit(): Promise<unknown>
}

/** A connected node-redis client of `make`, closed after the file. */
async function connected<C extends Connectable>(make: () => C): Promise<C> {
  const client = make()
  client.on('error', () => {}) // reconnects are expected in these tests
  await client.connect()
  closers.push(() => client.quit())
  return client
}

function backendOf(options: Parameters<typeof redisBackend>[0]): Backend {
  const backend = redisBackend({ startupGrace: false, ...options })
  closers.push(() => backend.close())
  return backend
}

const resource = (label: string) => `node-redis/${label}-${randomBytes(4).toString('hex')}`
const ask = (b: Backend, res: string, candidate: string) =>
  b.acquire({ resource: res, candidate, tickets: 1, leaseMs: 5_000, metadata: { candidate } })

describe('clients the backend refuses', () => {
  const refused = (client: unknown) => {
    try {
      redisBackend({ client: client as never })
    } catch (error) {
      expect(error).toBeInstanceOf(OptionsError)
      expect((error as OptionsError).field).toBe('client')
      return (error as OptionsError).message
    }
    throw new Error('not refused')
  }

  it('a Cluster (v6 and v4), naming the ioredis Cluster to use instead', () => {
    const rootNodes = [{ url: 'redis://127.0.0.1:1' }]
    expect(refused(createCluster({ rootNodes }))).toMatch(
      /node-redis Cluster client \(createCluster\) is not supported: give an ioredis Cluster client/,
    )
    expect(refused(createCluster4({ rootNodes }))).toMatch(/createCluster\) is not supported/)
  })

  it('a Sentinel client and a pool', () => {
    const sentinel = createSentinel({
      name: 'mymaster',
      sentinelRootNodes: [{ host: '127.0.0.1', port: 1 }],
    })
    expect(refused(sentinel)).toMatch(/createSentinel\) is not supported.*redis\+sentinel:\/\//)
    expect(refused(createClientPool({ url: server.url }))).toMatch(
      /createClientPool\) is not supported: a WAIT must follow its grant on the same connection/,
    )
  })

  it('a client not connected yet, and a v4 client in legacyMode', () => {
    expect(refused(createClient({ url: server.url }))).toMatch(
      /not connected: call `await client\.connect\(\)` before redisBackend/,
    )
    expect(refused(createClient4({ url: server.url, legacyMode: true }))).toMatch(/legacyMode/)
  })
})

describe.each([
  ['v6', () => createClient({ url: server.url })],
  ['v5', () => createClient5({ url: server.url })],
  ['v4', () => createClient4({ url: server.url })],
] as [string, () => AnyClient][])('node-redis %s', (_, make) => {
  it('resubscribes after its subscriber connection is killed, and wakes the watchers', async () => {
    const client = await connected(make)
    const backend = backendOf({ client, heartbeatMs: 200 })
    const res = resource('kill')
    let wakes = 0
    const unwatch = await backend.watch(res, () => wakes++)
    const admin = await connected(make)
    await admin.sendCommand(['CLIENT', 'KILL', 'TYPE', 'pubsub'])
    // Woken once when the new connection is subscribed (a change may have gone unheard).
    await until(() => wakes >= 1, 10_000, 'the wake-up after resubscribing')
    const before = wakes
    // A grant publishes on the resource's channel: heard on the new connection.
    expect((await ask(backend, res, 'a')).acquired).toBe(true)
    await until(() => wakes > before, 10_000, 'the wake-up of a grant')
    await unwatch()
  })

  it('fencedWrite: writes with the highest token, refuses an older one', async () => {
    const client = await connected(make)
    const key = resource('fenced')
    await fencedWrite(client, key, 5, 'five')
    await expect(fencedWrite(client, key, 4, 'four')).rejects.toBeInstanceOf(StaleTokenError)
    await client.sendCommand(['SCRIPT', 'FLUSH'])
    await fencedWrite(client, key, 6, 'six')
    expect(await client.sendCommand(['GET', key])).toBe('six')
  })

  it('runs its scripts again after SCRIPT FLUSH (NOSCRIPT: EVAL), pipelined renewals too', async () => {
    const client = await connected(make)
    const backend = backendOf({ client })
    const res = resource('flush')
    const granted = await ask(backend, res, 'a')
    expect(granted.acquired).toBe(true)
    await client.sendCommand(['SCRIPT', 'FLUSH'])
    const token = granted.acquired ? granted.token : 0
    expect(await backend.renew([{ resource: res, candidate: 'a', token, leaseMs: 5_000 }])).toEqual(
      [true],
    )
    await client.sendCommand(['SCRIPT', 'FLUSH'])
    expect(await backend.holders(res)).toMatchObject([{ candidate: 'a', token }])
  })
})

describe('WAIT with a real replica (the replicas option)', () => {
  let replica: RedisServer
  beforeAll(async () => {
    replica = await startRedis({ args: ['--replicaof', '127.0.0.1', String(server.port)] })
    closers.push(() => replica.stop())
    const probe = await connected(() => createClient({ url: replica.url }))
    await until(
      async () =>
        /master_link_status:up/.test(await probe.sendCommand<string>(['INFO', 'replication'])),
      15_000,
      'the replica to be in sync',
    )
  })

  it.each([
    ['v6', () => createClient({ url: server.url })],
    ['v4', () => createClient4({ url: server.url })],
  ] as [string, () => AnyClient][])(
    '%s: counts a grant, renewal and record one replica acknowledged; refuses when two are required',
    async (_, make) => {
      const client = await connected(make)
      const one = backendOf({ client, replicas: 1, replicaTimeoutMs: 2_000 })
      const res = resource('wait')
      const granted = await ask(one, res, 'a')
      expect(granted.acquired).toBe(true)
      const token = granted.acquired ? granted.token : 0
      expect(await one.renew([{ resource: res, candidate: 'a', token, leaseMs: 5_000 }])).toEqual([
        true,
      ])
      expect(
        await one.writeRecord!({ resource: res, key: 'k', value: 1, token, version: 0 }),
      ).toEqual({ written: true, version: 1 })
      const two = backendOf({ client, replicas: 2, replicaTimeoutMs: 50 })
      await expect(
        two.renew([{ resource: res, candidate: 'a', token, leaseMs: 5_000 }]),
      ).rejects.toThrow(/acknowledged by 1 of the 2 replicas required within 50 ms/)
    },
  )
})

it('a RESP3 client (v6): grants, holders, wake-ups and the server clock', async () => {
  const client = await connected(() => createClient({ url: server.url, RESP: 3 }))
  const backend = backendOf({ client })
  const res = resource('resp3')
  let wakes = 0
  const unwatch = await backend.watch(res, () => wakes++)
  const granted = await ask(backend, res, 'a')
  expect(granted.acquired).toBe(true)
  expect(await backend.holders(res)).toMatchObject([
    { candidate: 'a', metadata: { candidate: 'a' } },
  ])
  await until(() => wakes > 0, 10_000, 'the wake-up of a grant')
  expect(Math.abs((await backend.now!()) - Date.now())).toBeLessThan(60_000)
  await unwatch()
})

it('warns about an evicting maxmemory-policy, read through node-redis (RESP2 and RESP3)', async () => {
  const warnings: string[] = []
  const onWarning = (w: Error & { code?: string }) => {
    if (w.code === REDIS_EVICTION_WARNING) warnings.push(w.message)
  }
  process.on('warning', onWarning)
  try {
    for (const RESP of [2, 3] as const) {
      const evicting = await startRedis({ args: ['--maxmemory-policy', 'allkeys-lru'] })
      closers.push(() => evicting.stop())
      const client = await connected(() => createClient({ url: evicting.url, RESP }))
      const backend = backendOf({ client })
      await ask(backend, resource('evict'), 'a')
      await until(
        () => warnings.some((w) => w.includes(`127.0.0.1:${evicting.port}`)),
        10_000,
        `the eviction warning (RESP${RESP})`,
      )
    }
    expect(warnings[0]).toMatch(/maxmemory-policy "allkeys-lru"/)
  } finally {
    process.off('warning', onWarning)
  }
})
