// First come, first served on the redis backend (issue 18, DESIGN guarantee 12), below the
// conformance suite: the line's keys and their TTLs, `ahead`, queued renewals mixed with grant
// renewals in one call, and the wake list the scripts publish (merged with the keyspace events of
// the same reply). A real redis-server with keyspace notifications on, as docs/redis.md asks.
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, expect, it } from 'vitest'
import type { AcquireResult, WatchChange } from '../../src/backend.js'
import { redisBackend, type RedisBackend, resourceKeys } from '../../src/backends/redis/index.js'
import { parseWake } from '../../src/backends/redis/wakeups.js'
import { startRedis, type RedisServer } from '../../testkit/index.js'
import { fastFailingClient, sleep, until } from './helpers.js'

let server: RedisServer
let admin: Redis
const opened: RedisBackend[] = []
const clients: Redis[] = []

beforeAll(async () => {
  server = await startRedis({ args: ['--notify-keyspace-events', 'Kghx'] })
  admin = fastFailingClient(server.url, { commandTimeout: 10_000 })
})
afterAll(async () => {
  await Promise.all(opened.map((b) => b.close()))
  for (const client of [...clients, admin]) client?.disconnect()
  await server?.stop()
})

function backend(): RedisBackend {
  const client = fastFailingClient(server.url, { commandTimeout: 5_000 })
  clients.push(client)
  const b = redisBackend({ client, startupGrace: false })
  opened.push(b)
  return b
}

const unique = (label: string) => `fcfs/${label}-${randomBytes(4).toString('hex')}`
const ask = (b: RedisBackend, resource: string, candidate: string, tickets = 1, leaseMs = 10_000) =>
  b.acquire({ resource, candidate, tickets, leaseMs, metadata: null })
const ahead = (r: AcquireResult) => (r.acquired ? -1 : r.ahead)
const tokenOf = (r: AcquireResult) => {
  if (!r.acquired) throw new Error('expected a grant')
  return r.token
}

it('answers ahead, keeps places in order, and grants the freed ticket to the first in line only', async () => {
  const b = backend()
  const resource = unique('order')
  const a = tokenOf(await ask(b, resource, 'a'))
  expect(ahead(await ask(b, resource, 'w1'))).toBe(0)
  expect(ahead(await ask(b, resource, 'w2'))).toBe(1)
  expect(ahead(await ask(b, resource, 'w3'))).toBe(2)
  // Asking again keeps the place.
  expect(ahead(await ask(b, resource, 'w2'))).toBe(1)
  const keys = resourceKeys(b.prefix, resource)
  expect(await admin.zrange(keys.line, '0', '-1')).toEqual(['w1', 'w2', 'w3'])
  // The line's keys expire (no key lives forever).
  expect(await admin.pttl(keys.line)).toBeGreaterThan(0)
  expect(await admin.pttl(keys.places)).toBeGreaterThan(0)
  await b.release({ resource, candidate: 'a', token: a })
  // A late asker, and the second in line, do not overtake the first.
  expect(ahead(await ask(b, resource, 'late'))).toBe(3)
  expect(ahead(await ask(b, resource, 'w2'))).toBe(1)
  const w1 = tokenOf(await ask(b, resource, 'w1'))
  expect(w1).toBeGreaterThan(a)
  // Granted: its place is gone.
  expect(await admin.zrange(keys.line, '0', '-1')).toEqual(['w2', 'w3', 'late'])
  expect(ahead(await ask(b, resource, 'w3'))).toBe(1)
})

it('with tickets > 1: held + ahead < tickets', async () => {
  const b = backend()
  const resource = unique('tickets')
  tokenOf(await ask(b, resource, 'a', 3))
  const h2 = tokenOf(await ask(b, resource, 'b', 3))
  tokenOf(await ask(b, resource, 'c', 3))
  expect(ahead(await ask(b, resource, 'w1', 3))).toBe(0)
  expect(ahead(await ask(b, resource, 'w2', 3))).toBe(1)
  await b.release({ resource, candidate: 'b', token: h2 })
  // One ticket free: it is w1's, not w2's.
  expect(ahead(await ask(b, resource, 'w2', 3))).toBe(1)
  tokenOf(await ask(b, resource, 'w1', 3))
})

it('skips a place not kept for its lease', async () => {
  const b = backend()
  const resource = unique('expire')
  const a = tokenOf(await ask(b, resource, 'a'))
  expect(ahead(await ask(b, resource, 'short', 1, 200))).toBe(0)
  expect(ahead(await ask(b, resource, 'long'))).toBe(1)
  await sleep(400) // the short place runs out (no timing is asserted)
  expect(ahead(await ask(b, resource, 'long'))).toBe(0)
  await b.release({ resource, candidate: 'a', token: a })
  tokenOf(await ask(b, resource, 'long'))
})

it('waiters() lists the live places in line order, skipping an expired one, and writes nothing', async () => {
  const b = backend()
  const resource = unique('waiters')
  const a = tokenOf(await ask(b, resource, 'a'))
  await ask(b, resource, 'w1')
  await ask(b, resource, 'short', 1, 200)
  await ask(b, resource, 'w2')
  const listed = await b.waiters(resource)
  expect(listed.map((w) => w.candidate)).toEqual(['w1', 'short', 'w2'])
  for (const w of listed) {
    // On the server's clock, at most the lease; places carry no metadata.
    expect(w.remainingMs).toBeGreaterThan(0)
    expect(w.remainingMs).toBeLessThanOrEqual(10_000)
    expect(w).not.toHaveProperty('metadata')
  }
  await sleep(400) // the short place runs out (no timing is asserted)
  expect(await b.waiters(resource)).toEqual([
    { candidate: 'w1', remainingMs: expect.any(Number) as number },
    { candidate: 'w2', remainingMs: expect.any(Number) as number },
  ])
  // Read-only: the expired place is skipped, not pruned (the writing scripts do that).
  const keys = resourceKeys(b.prefix, resource)
  expect(await admin.zrange(keys.line, '0', '-1')).toEqual(['w1', 'short', 'w2'])
  // A granted candidate stands in no line; a resource nobody waits for has an empty one.
  await b.release({ resource, candidate: 'a', token: a })
  tokenOf(await ask(b, resource, 'w1'))
  expect((await b.waiters(resource)).map((w) => w.candidate)).toEqual(['w2'])
  expect(await b.waiters(unique('nobody'))).toEqual([])
})

it('renews queued places and grants in one call: true while no ticket is free for the place', async () => {
  const b = backend()
  const resource = unique('queued')
  const other = unique('other')
  const a = tokenOf(await ask(b, resource, 'a'))
  const o = tokenOf(await ask(b, other, 'o'))
  await ask(b, resource, 'w1')
  await ask(b, resource, 'w2')
  const q = (candidate: string) => ({
    resource,
    candidate,
    token: 0,
    leaseMs: 10_000,
    queued: true as const,
  })
  expect(
    await b.renew([
      q('w1'),
      { resource: other, candidate: 'o', token: o, leaseMs: 10_000 },
      q('w2'),
      q('nobody'),
    ]),
  ).toEqual([true, true, true, false])
  await b.release({ resource, candidate: 'a', token: a })
  // The ticket is w1's: it asks again; w2 keeps waiting (the line's tickets are remembered).
  expect(await b.renew([q('w1'), q('w2')])).toEqual([false, true])
  // A queued renew never grants.
  expect(await b.holders(resource)).toEqual([])
  tokenOf(await ask(b, resource, 'w1'))
  expect(await b.renew([q('w2')])).toEqual([true])
})

it('a queued renew keeps the place for a fresh lease', async () => {
  const b = backend()
  const resource = unique('keep')
  tokenOf(await ask(b, resource, 'a'))
  await ask(b, resource, 'w1', 1, 300)
  await ask(b, resource, 'w2')
  for (let i = 0; i < 4; i++) {
    await sleep(150)
    expect(
      await b.renew([{ resource, candidate: 'w1', token: 0, leaseMs: 300, queued: true }]),
    ).toEqual([true])
  }
  expect(ahead(await ask(b, resource, 'w2'))).toBe(1)
})

it('release without a token withdraws the place; with a token it leaves the place alone', async () => {
  const b = backend()
  const resource = unique('withdraw')
  tokenOf(await ask(b, resource, 'a'))
  await ask(b, resource, 'w1')
  await ask(b, resource, 'w2')
  await b.release({ resource, candidate: 'w1', token: 12345 })
  expect(ahead(await ask(b, resource, 'w2'))).toBe(1)
  await b.release({ resource, candidate: 'w1' })
  expect(ahead(await ask(b, resource, 'w2'))).toBe(0)
})

it('publishes whom a release wakes; taking a place publishes nothing', async () => {
  const b = backend()
  const watcher = backend()
  const resource = unique('wake')
  const changes: (WatchChange | undefined)[] = []
  const unwatch = await watcher.watch(resource, (change) => changes.push(change))
  const a = tokenOf(await ask(b, resource, 'a'))
  await until(() => changes.length >= 1, 5_000, `change 1`)
  // The grant: a change, no waiter concerned (the keyspace events of the same reply merged).
  expect(changes).toEqual([{ wake: [] }])
  await ask(b, resource, 'w1')
  await ask(b, resource, 'w2')
  await ask(b, resource, 'w1')
  await sleep(100)
  expect(changes).toHaveLength(1)
  await b.release({ resource, candidate: 'a', token: a })
  await until(() => changes.length >= 2, 5_000, `change 2`)
  expect(changes[1]).toEqual({ wake: ['w1'] })
  tokenOf(await ask(b, resource, 'w1'))
  await until(() => changes.length >= 3, 5_000, `change 3`)
  expect(changes[2]).toEqual({ wake: [] })
  // A key deleted by hand (heard through keyspace notifications): unknown, everyone asks again.
  await admin.del(resourceKeys(b.prefix, resource).grants)
  await until(() => changes.length >= 4, 5_000, `change 4`)
  expect(changes[3]).toBeUndefined()
  await unwatch()
})

it('reads the wake payload strictly', () => {
  expect(parseWake('{"wake":["a","b\\/c"]}')).toEqual(['a', 'b/c'])
  expect(parseWake('{"wake":[]}')).toEqual([])
  expect(parseWake('1')).toBeUndefined()
  expect(parseWake('{"wake":[1]}')).toBeUndefined()
  expect(parseWake('{oops')).toBeUndefined()
})
