// The redis backend's own promises beyond the conformance suite: script cache loss, key
// layout, one subscriber connection, wake-up after a reconnect, batched renewal, options.
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Backend } from '../../src/backend.js'
import { redisBackend, RedisBackend, resourceKeys } from '../../src/backends/redis/index.js'
import { backendFromUrl, BACKEND_SCHEMES } from '../../src/cli/backends.js'
import { Election } from '../../src/election.js'
import { BackendClosedError, OptionsError, TicketsMismatchError } from '../../src/errors.js'
import { startProxy } from '../../testkit/proxy.js'
import { startRedis, type RedisServer } from '../../testkit/index.js'
import { commandCalls, fastFailingClient, sleep, until } from './helpers.js'

let server: RedisServer
let admin: Redis
const opened: { backends: Backend[]; clients: Redis[] } = { backends: [], clients: [] }

beforeAll(async () => {
  server = await startRedis()
  admin = fastFailingClient(server.url, { commandTimeout: 10_000 })
})
afterAll(async () => {
  await Promise.all(opened.backends.map((b) => b.close()))
  for (const client of [...opened.clients, admin]) client?.disconnect()
  await server?.stop()
})

function backend(
  options: { prefix?: string; url?: string; timeoutMs?: number } = {},
): RedisBackend {
  const { url = server.url, ...rest } = options
  const client = fastFailingClient(url, { commandTimeout: options.timeoutMs ?? 5_000 })
  opened.clients.push(client)
  // Every server in these tests starts empty: no grant to lose, no startup grace (tested in
  // server-faults.test.ts), so long leases need not wait for the server's uptime.
  const b = redisBackend({ client, startupGrace: false, ...rest })
  opened.backends.push(b)
  return b
}

const unique = (label: string) => `${label}/${randomBytes(4).toString('hex')}`
const acquire = (b: Backend, resource: string, candidate: string, leaseMs = 10_000) =>
  b.acquire({ resource, candidate, tickets: 1, leaseMs, metadata: { candidate } })

it('works on after the script cache is flushed (NOSCRIPT, then EVAL / SCRIPT LOAD)', async () => {
  const b = backend()
  const resource = unique('noscript')
  const got = await acquire(b, resource, 'a')
  if (!got.acquired) throw new Error('expected a grant')
  await admin.script('FLUSH')
  const before = await commandCalls(admin)
  // The renewal pipeline first: every EVALSHA in it fails, the script is loaded, all run again.
  expect(await b.renew([{ resource, candidate: 'a', token: got.token, leaseMs: 10_000 }])).toEqual([
    true,
  ])
  const again = await acquire(b, resource, 'a')
  expect(again.acquired && again.token === got.token).toBe(true)
  expect((await b.holders(resource)).map((h) => h.candidate)).toEqual(['a'])
  await b.release({ resource, candidate: 'a', token: got.token })
  expect(await b.holders(resource)).toEqual([])
  const after = await commandCalls(admin)
  expect((after['script|load'] ?? 0) - (before['script|load'] ?? 0)).toBe(1)
  expect((after.eval ?? 0) - (before.eval ?? 0)).toBe(3) // acquire, holders, release
  // Cached now: the next calls are plain EVALSHA.
  await acquire(b, resource, 'a')
  await b.release({ resource, candidate: 'a' })
  const last = await commandCalls(admin)
  expect(last.eval).toBe(after.eval)
})

describe('close', () => {
  it('runs every onClose hook first, while calls still work, then fails every call as closed', async () => {
    const observer = backend()
    // Owns its client, and watches: close() must leave no connection of its own behind.
    const name = `close-${randomBytes(3).toString('hex')}`
    const b = redisBackend({
      url: server.url,
      startupGrace: false,
      clientOptions: { connectionName: name },
    })
    const connections = async () =>
      String(await admin.call('CLIENT', 'LIST'))
        .split('\n')
        .filter((line) => line.includes(` name=${name} `)).length
    const resource = unique('close')
    const got = await acquire(b, resource, 'a')
    if (!got.acquired) throw new Error('expected a grant')
    await b.watch(resource, () => {})
    expect(await connections()).toBe(2) // the client and the subscriber
    const ran: string[] = []
    let seenInHook: string[] = []
    b.onClose(async () => {
      await sleep(200) // close() waits for a slow hook
      seenInHook = (await b.holders(resource)).map((h) => h.candidate)
      await b.release({ resource, candidate: 'a', token: got.token })
      ran.push('releasing hook')
    })
    const removed = b.onClose(async () => void ran.push('removed hook'))
    removed()
    b.onClose(() => Promise.reject(new Error('a failing hook does not keep the backend open')))
    b.onClose(async () => void ran.push('quick hook'))
    const closing = b.close()
    await Promise.all([closing, b.close()])
    expect(ran.sort()).toEqual(['quick hook', 'releasing hook'])
    expect(seenInHook).toEqual(['a'])
    // The hook's release reached the server before the connection went.
    expect(await observer.holders(resource)).toEqual([])
    const calls: [string, () => Promise<unknown>][] = [
      ['acquire', () => acquire(b, resource, 'a')],
      ['renew', () => b.renew([{ resource, candidate: 'a', token: got.token, leaseMs: 10_000 }])],
      ['release', () => b.release({ resource, candidate: 'a' })],
      ['holders', () => b.holders(resource)],
      ['watch', () => b.watch(resource, () => {})],
    ]
    for (const [what, call] of calls) {
      const error = await call().then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(error, what).toBeInstanceOf(BackendClosedError)
      expect(error, what).toMatchObject({ code: 'ERR_CONCLAVE_CLOSED' })
    }
    await b.close() // still idempotent
    await until(async () => (await connections()) === 0, 5_000, 'its connections closed')
  })

  it('leaves your own client open, and hooks may still use it', async () => {
    const client = fastFailingClient(server.url)
    opened.clients.push(client)
    const b = redisBackend({ client, startupGrace: false })
    const resource = unique('close-own')
    expect((await acquire(b, resource, 'a')).acquired).toBe(true)
    b.onClose(() => b.release({ resource, candidate: 'a' }))
    await b.close()
    expect(await client.exists(resourceKeys('conclave:', resource).holders)).toBe(0)
    expect(await client.ping()).toBe('PONG')
    await expect(b.holders(resource)).rejects.toBeInstanceOf(BackendClosedError)
  })
})

describe('tickets', () => {
  it('refuses another number of tickets while a grant lives, and any number once none does', async () => {
    const b = backend()
    const resource = unique('tickets')
    const ask = (candidate: string, tickets: number, leaseMs = 10_000) =>
      b.acquire({ resource, candidate, tickets, leaseMs, metadata: null })
    const holderNames = async () => (await b.holders(resource)).map((h) => h.candidate)
    expect((await ask('a', 2)).acquired).toBe(true)
    const refused = await ask('b', 3).catch((e: unknown) => e)
    expect(refused).toBeInstanceOf(TicketsMismatchError)
    expect(refused).toMatchObject({
      code: 'ERR_CONCLAVE_TICKETS_MISMATCH',
      resource,
      tickets: 3,
      held: 2,
    })
    expect(await holderNames()).toEqual(['a'])
    // The holder itself is refused too, and keeps its grant.
    await expect(ask('a', 1)).rejects.toMatchObject({ tickets: 1, held: 2 })
    expect((await ask('b', 2)).acquired).toBe(true)
    expect(await holderNames()).toEqual(['a', 'b'])
    // One of the two released: the other still holds with 2.
    await b.release({ resource, candidate: 'a' })
    await expect(ask('c', 1)).rejects.toMatchObject({ tickets: 1, held: 2 })
    // All released: any number again, remembered for the new grants.
    await b.release({ resource, candidate: 'b' })
    expect((await ask('c', 5)).acquired).toBe(true)
    await expect(ask('d', 2)).rejects.toMatchObject({ tickets: 2, held: 5 })
    await b.release({ resource, candidate: 'c' })
    // Expired rather than released: the same.
    expect((await ask('e', 1, 200)).acquired).toBe(true)
    await expect(ask('f', 3)).rejects.toMatchObject({ tickets: 3, held: 1 })
    await sleep(400)
    expect((await ask('f', 3)).acquired).toBe(true)
    await b.release({ resource, candidate: 'f' })
    // Released: nothing but the token counter is left.
    const keys = resourceKeys('conclave:', resource)
    expect(await admin.exists(keys.holders, keys.grants)).toBe(0)
  })
})

describe('key layout', () => {
  it('puts all keys of a resource under one hash tag, with TTLs, and nothing else', async () => {
    const prefix = `layout${randomBytes(3).toString('hex')}:`
    const b = backend({ prefix })
    const resource = 'reports/nightly:v2@eu=1'
    const lease = 10_000
    const got = await acquire(b, resource, 'a', lease)
    expect(got.acquired).toBe(true)
    const keys = (await admin.keys(`${prefix}*`)).sort()
    const expected = resourceKeys(prefix, resource)
    expect(keys).toEqual(
      [expected.grants, expected.holders, expected.token, expected.guard, expected.history].sort(),
    )
    for (const key of keys) {
      // Redis Cluster hashes only what is between the first { and the next }.
      const tag = /\{([^}]*)\}/.exec(key)?.[1]
      expect(tag).toBe(resource)
    }
    expect(expected.channel).toContain(`{${resource}}`)
    for (const key of [expected.holders, expected.grants, expected.guard]) {
      const ttl = await admin.pttl(key)
      expect(ttl).toBeGreaterThan(0)
      expect(ttl).toBeGreaterThanOrEqual(lease - 1_000) // outlives the grant
      expect(ttl).toBeLessThanOrEqual(2 * lease) // and not much more
    }
    // The guard never expires before the holders key (it is set from its TTL).
    expect(await admin.pttl(expected.guard)).toBeGreaterThanOrEqual(
      (await admin.pttl(expected.holders)) - 5,
    )
    expect(await admin.pttl(expected.token)).toBeGreaterThan(lease)
    expect(await admin.pttl(expected.history)).toBeGreaterThan(lease)
    // Released: only the token counter (so tokens keep growing) and the replication history seen
    // (the failover grace) stay, and they expire too; the guard went with the last grant.
    await b.release({ resource, candidate: 'a' })
    expect((await admin.keys(`${prefix}*`)).sort()).toEqual(
      [expected.history, expected.token].sort(),
    )
    // Keys of different resources land under different tags; no key outside the prefix.
    await acquire(b, 'other', 'a')
    expect((await admin.keys(`${prefix}*`)).filter((k) => k.includes('{other}'))).toHaveLength(5)
    await b.release({ resource: 'other', candidate: 'a' })
  })
})

describe('watches', () => {
  it('share one subscriber connection, confirmed before watch() resolves', async () => {
    const url = server.url
    // Owns its client: close() must leave no connection behind.
    const b = redisBackend({ url, lingerMs: 300, startupGrace: false })
    const clientList = async (...args: string[]) =>
      String(await admin.call('CLIENT', 'LIST', ...args))
        .trim()
        .split('\n')
    const clientCount = async () => (await clientList()).length
    const before = await clientCount()
    const resources = Array.from({ length: 20 }, (_, i) => unique(`watch${i}`))
    let woken = 0
    const unwatches = await Promise.all(resources.map((r) => b.watch(r, () => woken++)))
    unwatches.push(await b.watch(resources[0]!, () => woken++))
    // Subscribed by the time watch() resolved, as another connection sees it.
    const channels = resources.map((r) => resourceKeys('conclave:', r).channel)
    const counts = (await admin.pubsub('NUMSUB', ...channels)) as (string | number)[]
    expect(counts.filter((_, i) => i % 2 === 1).map(Number)).toEqual(resources.map(() => 1))
    expect(await clientList('TYPE', 'pubsub')).toHaveLength(1)
    // A release on one resource wakes its two watchers, nobody else.
    await acquire(b, resources[0]!, 'a')
    await until(() => woken >= 2, 5_000, 'two watchers woken')
    await b.release({ resource: resources[0]!, candidate: 'a' })
    await until(() => woken >= 4, 5_000, 'two watchers woken again')
    await sleep(100)
    expect(woken).toBe(4)
    await Promise.all(unwatches.map((u) => u()))
    // Still subscribed for lingerMs: watching again meanwhile sends no SUBSCRIBE.
    const subscribes = (await commandCalls(admin)).subscribe
    const rewatch = await b.watch(resources[1]!, () => {})
    expect((await commandCalls(admin)).subscribe).toBe(subscribes)
    await rewatch()
    await until(
      async () =>
        JSON.stringify(await admin.pubsub('NUMSUB', ...channels)) ===
        JSON.stringify(channels.flatMap((c) => [c, 0])),
      5_000,
      'every channel unsubscribed after lingerMs',
    )
    await b.close()
    await until(async () => (await clientCount()) === before, 5_000, 'connections closed')
    expect(await clientCount()).toBe(before)
  })

  it('wakes waiters after the subscriber reconnects (a release may have been missed)', async () => {
    const proxy = await startProxy({ targetPort: server.port })
    const b = backend({ url: `redis://127.0.0.1:${proxy.port}` })
    const direct = backend()
    const resource = unique('reconnect')
    const channel = resourceKeys('conclave:', resource).channel
    try {
      const held = await acquire(direct, resource, 'holder', 60_000)
      expect(held.acquired).toBe(true)
      // Both leases are far beyond this test: only a push or the reconnect nudge wakes it.
      const waiter = new Election(b, resource, { leaseMs: 60_000 })
      const errors: Error[] = []
      waiter.on('error', (e) => errors.push(e))
      const waiting = waiter.campaign()
      await until(
        async () => (await admin.pubsub('NUMSUB', channel))[1] === 1,
        5_000,
        'the waiter subscribed',
      )
      await sleep(200) // its acquire answered "held for 60 s"; it now waits
      proxy.cut({ mode: 'reset' })
      await until(
        async () => (await admin.pubsub('NUMSUB', channel))[1] === 0,
        5_000,
        'the subscription gone',
      )
      await direct.release({ resource, candidate: 'holder' }) // published to nobody
      proxy.restore()
      const term = await waiting
      expect(term.active).toBe(true)
      await waiter.close()
      expect(errors).toEqual([])
    } finally {
      await proxy.close()
    }
  })

  it('replaces a subscriber connection whose path hangs (heartbeat)', async () => {
    const proxy = await startProxy({ targetPort: server.port })
    const b = redisBackend({
      url: `redis://127.0.0.1:${proxy.port}`,
      heartbeatMs: 200,
      startupGrace: false,
    })
    const pubsubIds = async () =>
      String(await admin.call('CLIENT', 'LIST', 'TYPE', 'pubsub'))
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((line) => /\bid=(\d+)/.exec(line)![1])
    try {
      const resource = unique('heartbeat')
      let woken = 0
      await b.watch(resource, () => woken++)
      const [before] = await pubsubIds()
      expect(before).toBeDefined()
      // Hung, not closed: nothing but the unanswered PING tells the client.
      proxy.cut({ mode: 'blackhole' })
      await sleep(1_500)
      proxy.restore()
      // The old connection works again now, yet it was replaced by a new one...
      await until(
        async () => {
          const ids = await pubsubIds()
          return ids.length === 1 && ids[0] !== before
        },
        10_000,
        'a new subscriber connection',
      )
      // ...which serves the watch, and the watcher was nudged after reconnecting.
      await until(() => woken >= 1, 5_000, 'the nudge after reconnecting')
      const seen = woken
      const direct = backend()
      await acquire(direct, resource, 'x')
      await until(() => woken > seen, 5_000, 'a push on the new connection')
      await direct.release({ resource, candidate: 'x' })
    } finally {
      await b.close()
      await proxy.close()
    }
  })
})

it('renews 10,000 grants in one round trip of ten script calls', async () => {
  const proxy = await startProxy({ targetPort: server.port })
  try {
    // Generous timeouts: this runs on loaded test machines; the bound below is what matters.
    const b = backend({ url: `redis://127.0.0.1:${proxy.port}`, timeoutMs: 60_000 })
    const n = 10_000
    const prefix = unique('many')
    const resources = Array.from({ length: n }, (_, i) => `${prefix}/${i}`)
    const grants: Awaited<ReturnType<typeof acquire>>[] = []
    for (let i = 0; i < n; i += 1_000)
      grants.push(
        ...(await Promise.all(
          resources.slice(i, i + 1_000).map((r) => acquire(b, r, 'me', 60_000)),
        )),
      )
    const requests = grants.map((g, i) => {
      if (!g.acquired) throw new Error('expected a grant')
      return { resource: resources[i]!, candidate: 'me', token: g.token, leaseMs: 60_000 }
    })
    // Two that must fail, in known places: a wrong token, a candidate that holds nothing.
    requests[17] = { ...requests[17]!, token: requests[17]!.token + 1 }
    requests[4242] = { ...requests[4242]!, candidate: 'someone-else' }
    const before = await commandCalls(admin)
    // Every round trip now costs at least 2 x 100 ms: 10,000 of them would take 2,000 s.
    proxy.delay(100)
    const startedAt = performance.now()
    const results = await b.renew(requests)
    const tookMs = performance.now() - startedAt
    proxy.delay(0)
    const after = await commandCalls(admin)
    expect(results.filter((r) => !r)).toHaveLength(2)
    expect(results[17]).toBe(false)
    expect(results[4242]).toBe(false)
    expect(after.evalsha! - before.evalsha!).toBe(n / 1_000) // batches of 1,000 grants
    expect(tookMs).toBeLessThan(20 * 200) // a handful of round trips at most, not thousands
    for (let i = 0; i < n; i += 1_000)
      await Promise.all(
        resources.slice(i, i + 1_000).map((resource) => b.release({ resource, candidate: 'me' })),
      )
  } finally {
    await proxy.close()
  }
}, 90_000)

describe('options', () => {
  const client = () => {
    const c = new Redis(server.url, { lazyConnect: true })
    opened.clients.push(c)
    return c
  }
  const cases: [string, () => unknown, string][] = [
    ['nothing', () => redisBackend({}), 'client'],
    ['not an object', () => redisBackend(null as never), 'options'],
    ['client and url', () => redisBackend({ client: client(), url: server.url }), 'url'],
    ['not a client', () => redisBackend({ client: {} as never }), 'client'],
    ['http url', () => redisBackend({ url: 'http://127.0.0.1:6379' }), 'url'],
    ['url without host', () => redisBackend({ url: 'redis://' }), 'url'],
    ['url not a string', () => redisBackend({ url: 6379 as never }), 'url'],
    ['prefix with a brace', () => redisBackend({ client: client(), prefix: 'a{b}:' }), 'prefix'],
    ['prefix with a space', () => redisBackend({ client: client(), prefix: 'a b' }), 'prefix'],
    [
      'prefix too long',
      () => redisBackend({ client: client(), prefix: 'p'.repeat(101) }),
      'prefix',
    ],
    ['timeoutMs zero', () => redisBackend({ client: client(), timeoutMs: 0 }), 'timeoutMs'],
    ['timeoutMs fraction', () => redisBackend({ client: client(), timeoutMs: 1.5 }), 'timeoutMs'],
    ['lingerMs negative', () => redisBackend({ client: client(), lingerMs: -1 }), 'lingerMs'],
    ['an unknown option', () => redisBackend({ client: client(), prefx: 'x:' } as never), 'prefx'],
    ['heartbeatMs tiny', () => redisBackend({ client: client(), heartbeatMs: 5 }), 'heartbeatMs'],
    [
      'startupGrace not a boolean',
      () => redisBackend({ client: client(), startupGrace: 'no' as never }),
      'startupGrace',
    ],
    [
      'clientOptions with a client',
      () => redisBackend({ client: client(), clientOptions: {} }),
      'clientOptions',
    ],
    [
      'failoverGrace not a boolean',
      () => redisBackend({ client: client(), failoverGrace: 1 as never }),
      'failoverGrace',
    ],
    ['replicas negative', () => redisBackend({ client: client(), replicas: -1 }), 'replicas'],
    ['replicas fraction', () => redisBackend({ client: client(), replicas: 1.5 }), 'replicas'],
    ['replicas text', () => redisBackend({ client: client(), replicas: '1' as never }), 'replicas'],
    ['maxLeaseMs tiny', () => redisBackend({ client: client(), maxLeaseMs: 5 }), 'maxLeaseMs'],
    [
      'maxLeaseMs text',
      () => redisBackend({ client: client(), maxLeaseMs: '60000' as never }),
      'maxLeaseMs',
    ],
    [
      'maxLeaseMs in the URL and as an option',
      () => redisBackend({ url: `${server.url}?maxLeaseMs=1000`, maxLeaseMs: 1_000 }),
      'maxLeaseMs',
    ],
    [
      'replicaTimeoutMs zero',
      () => redisBackend({ client: client(), replicas: 1, replicaTimeoutMs: 0 }),
      'replicaTimeoutMs',
    ],
  ]
  for (const [label, make, field] of cases) {
    it(`refuses ${label}, naming ${field}`, () => {
      let error: unknown
      try {
        make()
      } catch (e) {
        error = e
      }
      expect(error).toBeInstanceOf(OptionsError)
      expect((error as OptionsError).field).toBe(field)
      expect((error as OptionsError).message).toMatch(/^Invalid /)
    })
  }

  it('is made from redis:// and rediss:// URLs by the CLI table, owning its client', async () => {
    expect(BACKEND_SCHEMES).toEqual(expect.arrayContaining(['redis:', 'rediss:']))
    const byDefault = await backendFromUrl(server.url)
    opened.backends.push(byDefault)
    expect(byDefault).toMatchObject({ startupGrace: true, maxLeaseMs: 60_000 })
    const b = await backendFromUrl(`${server.url}?startupGrace=false&maxLeaseMs=20000`)
    expect(b).toMatchObject({ maxLeaseMs: 20_000 })
    expect(b.name).toBe('redis')
    expect(b).toMatchObject({ startupGrace: false })
    const resource = unique('url')
    expect((await acquire(b, resource, 'a')).acquired).toBe(true)
    await b.release({ resource, candidate: 'a' })
    await b.close()
    await expect(b.holders(resource)).rejects.toMatchObject({ code: 'ERR_CONCLAVE_CLOSED' })
    await expect(backendFromUrl('redis://')).rejects.toBeInstanceOf(OptionsError)
    await expect(backendFromUrl(`${server.url}?startupGrace=maybe`)).rejects.toMatchObject({
      field: 'startupGrace',
    })
  })
})
