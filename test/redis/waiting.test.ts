// Why a campaign waits on Redis, said by the `waiting` event (and conclave:waiting): a freshly
// started server's startup grace, with the wait; keys deleted by hand while grants may live.
import { randomBytes } from 'node:crypto'
import { afterAll, afterEach, expect, it } from 'vitest'
import { redisBackend, resourceKeys } from '../../src/backends/redis/index.js'
import { Election, type WaitingInfo } from '../../src/election.js'
import { startRedis, type RedisServer } from '../../testkit/index.js'
import { fastFailingClient } from './helpers.js'

const servers: RedisServer[] = []
const closers: (() => Promise<void> | void)[] = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})
afterAll(async () => {
  await Promise.all(servers.map((s) => s.stop()))
})

function setup(server: RedisServer, startupGrace: boolean) {
  const client = fastFailingClient(server.url, { commandTimeout: 5_000 })
  const backend = redisBackend({ client, startupGrace })
  closers.push(
    () => client.disconnect(),
    () => backend.close(),
  )
  return { client, backend }
}

it('says a fresh server is in its startup grace, and for how long, before the first grant', async () => {
  const server = await startRedis()
  servers.push(server)
  const { backend } = setup(server, true)
  const leaseMs = 1_000
  const election = new Election(backend, `wait/${randomBytes(4).toString('hex')}`, { leaseMs })
  closers.push(() => election.close())
  const waits: WaitingInfo[] = []
  election.on('waiting', (info) => waits.push(info))
  const term = await election.campaign()
  expect(term.token).toBeGreaterThan(0)
  expect(waits.length).toBeGreaterThanOrEqual(1)
  const [first] = waits
  expect(first!.code).toBe('startup-grace')
  expect(first!.reason).toContain(`the redis server at 127.0.0.1:${server.port}`)
  expect(first!.reason).toMatch(/up for less than the lease \(1000 ms\) plus 1 s/)
  expect(first!.holders).toEqual([])
  // The grace lasts until the server's uptime reaches lease + 1 s (whole seconds): at most 2 s.
  expect(first!.retryInMs).toBeGreaterThan(0)
  expect(first!.retryInMs).toBeLessThanOrEqual(leaseMs + 2_000)
})

it('says keys deleted by hand keep a free ticket from being granted, and until when', async () => {
  const server = await startRedis()
  servers.push(server)
  const { backend, client } = setup(server, false)
  const resource = `wait/${randomBytes(4).toString('hex')}`
  const holder = new Election(backend, resource, { leaseMs: 3_000, id: 'holder' })
  holder.on('error', () => {})
  closers.push(() => holder.close())
  await holder.campaign()
  const keys = resourceKeys(backend.prefix, resource)
  await client.del(keys.holders, keys.grants) // by hand: the guard stays
  const other = redisBackend({ client, startupGrace: false })
  closers.push(() => other.close())
  const waiter = new Election(other, resource, { leaseMs: 3_000, id: 'waiter' })
  closers.push(() => waiter.close())
  const waits: WaitingInfo[] = []
  const first = new Promise<WaitingInfo>((resolve) => waiter.once('waiting', resolve))
  waiter.on('waiting', (info) => waits.push(info))
  const controller = new AbortController()
  const campaign = waiter.campaign({ signal: controller.signal }).catch(() => undefined)
  const info = await first
  controller.abort()
  await campaign
  expect(info.code).toBe('deleted-keys-guard')
  expect(info.reason).toMatch(/deleted by hand/)
  expect(info.retryInMs).toBeGreaterThan(0)
  expect(info.retryInMs).toBeLessThanOrEqual(6_000)
  // The number lives in retryInMs only: the reason's text stays the same from ask to ask.
  expect(info.reason).not.toMatch(/\d+ ms/)
  expect(waits.length).toBeGreaterThanOrEqual(1)
  expect(waits.every((w) => w.code === 'deleted-keys-guard')).toBe(true)
})
