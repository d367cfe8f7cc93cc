// The uncontended acquire does the least work the guarantees allow: the startup grace proved by
// LASTSAVE instead of INFO server, the failover history rewritten only when it changed or runs
// low. Each shortcut falls back to the full check, and the guarantees stay (tokens grow).
import { randomBytes } from 'node:crypto'
import type { Redis } from 'ioredis'
import { afterAll, beforeAll, expect, it } from 'vitest'
import type { AcquireResult, Backend } from '../../src/backend.js'
import { redisBackend, resourceKeys } from '../../src/backends/redis/index.js'
import { startRedis, type RedisServer } from '../../testkit/index.js'
import { commandCalls, fastFailingClient, sleep } from './helpers.js'

let old: RedisServer
const clients: Redis[] = []
const backends: Backend[] = []
const servers: RedisServer[] = []

beforeAll(async () => {
  old = await startRedis()
  servers.push(old)
})
afterAll(async () => {
  await Promise.all(backends.map((b) => b.close()))
  for (const client of clients) client.disconnect()
  await Promise.all(servers.map((s) => s.stop()))
})

function client(url: string, options: Parameters<typeof fastFailingClient>[1] = {}): Redis {
  const c = fastFailingClient(url, { commandTimeout: 5_000, ...options })
  clients.push(c)
  return c
}

function backend(c: Redis, options: { startupGrace?: boolean; failoverGrace?: boolean } = {}) {
  const b = redisBackend({ client: c, timeoutMs: 5_000, ...options })
  backends.push(b)
  return b
}

const resource = () => `uncontended/${randomBytes(4).toString('hex')}`
const ask = (b: Backend, r: string, candidate: string, leaseMs = 1_000): Promise<AcquireResult> =>
  b.acquire({ resource: r, candidate, tickets: 1, leaseMs, metadata: null })

/** Until the server has been up for `seconds` (its own INFO uptime). */
async function upFor(c: Redis, seconds: number) {
  for (;;) {
    const info = await c.info('server')
    if (Number(/uptime_in_seconds:(\d+)/.exec(info)?.[1]) >= seconds) return
    await sleep(200)
  }
}

it('grants on a server up longer than the grace without reading INFO', async () => {
  const admin = client(old.url)
  await upFor(admin, 3) // the grace of a 1 s lease: a reported uptime of 2 s
  const b = backend(client(old.url), { failoverGrace: false })
  const r = resource()
  await ask(b, r, 'warm', 1_000) // the script cached, the connection's own INFO done
  await b.release({ resource: r, candidate: 'warm' })
  const before = await commandCalls(admin)
  const granted = await ask(b, r, 'A')
  const after = await commandCalls(admin)
  expect(granted.acquired).toBe(true)
  expect(after.info ?? 0).toBe((before.info ?? 0) + 1) // ours (commandCalls), none from the script
  expect(after.lastsave).toBe((before.lastsave ?? 0) + 1)
})

it('a save just now sends the startup check on to INFO, which still grants', async () => {
  const admin = client(old.url)
  await upFor(admin, 3)
  const b = backend(client(old.url), { failoverGrace: false })
  const warm = resource()
  await ask(b, warm, 'warm') // the connection's own INFO done
  await b.release({ resource: warm, candidate: 'warm' })
  await admin.save() // LASTSAVE now: no proof of uptime from it
  const before = await commandCalls(admin)
  const granted = await ask(b, resource(), 'A')
  const after = await commandCalls(admin)
  expect(granted.acquired).toBe(true)
  expect(after.info).toBe((before.info ?? 0) + 2) // ours and the script's INFO server
})

it('a fresh server waits out its startup grace when its user may not run LASTSAVE', async () => {
  const fresh = await startRedis()
  servers.push(fresh)
  const admin = client(fresh.url)
  await admin.call('ACL', 'SETUSER', 'nolastsave', 'on', '>pw', '~*', '&*', '+@all', '-lastsave')
  const url = `redis://nolastsave:pw@127.0.0.1:${fresh.port}`
  const b = backend(client(url))
  const answer = await ask(b, resource(), 'A', 2_000)
  expect(answer.acquired).toBe(false)
  if (!answer.acquired) {
    expect(answer.wait?.code).toBe('startup-grace')
    expect(answer.retryInMs).toBeGreaterThan(0)
  }
})

it('keeps the failover history alive: rewritten when its TTL runs low, not lost', async () => {
  const admin = client(old.url)
  const b = backend(client(old.url), { startupGrace: false })
  const r = resource()
  const keys = resourceKeys(b.prefix, r)
  const first = await ask(b, r, 'A')
  expect(first.acquired).toBe(true)
  const seen = await admin.get(keys.history)
  expect(seen).toMatch(/^[0-9a-f]+:0$/)
  const week = 7 * 24 * 3_600_000
  expect(await admin.pttl(keys.history)).toBeGreaterThan(week)
  await admin.pexpire(keys.history, 60_000) // as if a week had gone by without an ask
  const again = await ask(b, r, 'A')
  expect(again.acquired).toBe(true)
  expect(await admin.get(keys.history)).toBe(seen)
  expect(await admin.pttl(keys.history)).toBeGreaterThan(week)
})

it('tokens keep growing after the token key expired and the resource was acquired again', async () => {
  const admin = client(old.url)
  const b = backend(client(old.url), { startupGrace: false })
  const r = resource()
  const keys = resourceKeys(b.prefix, r)
  const first = await ask(b, r, 'A')
  if (!first.acquired) throw new Error('not granted')
  await b.release({ resource: r, candidate: 'A', token: first.token })
  await admin.del(keys.token) // as its TTL would
  const second = await ask(b, r, 'B')
  if (!second.acquired) throw new Error('not granted')
  expect(second.token).toBeGreaterThan(first.token)
})

it('a release lifts the guard and forgets the tickets with the last grant only', async () => {
  const admin = client(old.url)
  const b = backend(client(old.url), { startupGrace: false })
  const r = resource()
  const keys = resourceKeys(b.prefix, r)
  const ask2 = (candidate: string) =>
    b.acquire({ resource: r, candidate, tickets: 2, leaseMs: 5_000, metadata: null })
  const a = await ask2('A')
  const c = await ask2('B')
  if (!a.acquired || !c.acquired) throw new Error('not granted')
  await b.release({ resource: r, candidate: 'A', token: a.token })
  expect(await admin.exists(keys.guard)).toBe(1)
  expect(await admin.hget(keys.grants, ' tickets')).toBe('2')
  await b.release({ resource: r, candidate: 'B', token: c.token })
  expect(await admin.exists(keys.guard, keys.grants, keys.holders)).toBe(0)
})
