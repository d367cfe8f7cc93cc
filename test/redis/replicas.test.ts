// The replicas option (WAIT after each grant and renewal) and the failover grace on a plain
// server: a standalone redis-server has no replica, so nothing is ever acknowledged; a fresh
// master owes no failover grace, and reconnecting to it never starts one.
import { Redis } from 'ioredis'
import { afterAll, beforeAll, expect, it } from 'vitest'
import type { Backend } from '../../src/backend.js'
import { redisBackend } from '../../src/backends/redis/index.js'
import { BackendError } from '../../src/errors.js'
import { startRedis, type RedisServer } from '../../testkit/index.js'
import { fastFailingClient } from './helpers.js'

let server: RedisServer
const clients: Redis[] = []
const backends: Backend[] = []

beforeAll(async () => {
  server = await startRedis()
})
afterAll(async () => {
  await Promise.allSettled(backends.map((b) => b.close()))
  for (const client of clients) client.disconnect()
  await server?.stop()
})

function backend(options: { replicas?: number } = {}): { backend: Backend; client: Redis } {
  const client = fastFailingClient(server.url)
  clients.push(client)
  const b = redisBackend({ client, startupGrace: false, replicaTimeoutMs: 50, ...options })
  backends.push(b)
  return { backend: b, client }
}

const ask = (b: Backend, resource: string, candidate: string) =>
  b.acquire({ resource, candidate, tickets: 1, leaseMs: 5_000, metadata: null })

it('does not count a grant no replica acknowledged, and grants nobody else meanwhile', async () => {
  const { backend: b } = backend({ replicas: 1 })
  await expect(ask(b, 'wait/grant', 'a')).rejects.toThrow(
    /acknowledged by 0 of the 1 replicas required within 50 ms/,
  )
  await expect(ask(b, 'wait/grant', 'a')).rejects.toBeInstanceOf(BackendError)
  // The grant stays on the master for its lease: another candidate is not let in.
  const other = await ask(backend().backend, 'wait/grant', 'b')
  expect(other.acquired).toBe(false)
})

it('rejects a renewal no replica acknowledged (unknown: the term keeps its deadline)', async () => {
  const plain = backend().backend
  const granted = await ask(plain, 'wait/renew', 'a')
  expect(granted.acquired).toBe(true)
  const { backend: b } = backend({ replicas: 1 })
  const renewal = [
    {
      resource: 'wait/renew',
      candidate: 'a',
      token: granted.acquired ? granted.token : 0,
      leaseMs: 5_000,
    },
  ]
  await expect(b.renew(renewal)).rejects.toThrow(/redis renew on .*acknowledged by 0 of the 1/)
  expect(await plain.renew(renewal)).toEqual([true])
})

it('does not count a schedule record no replica acknowledged (a promoted replica could lack the claim)', async () => {
  const { backend: b } = backend({ replicas: 1 })
  await expect(
    b.writeRecord!({ resource: 'wait/record', key: 'cron', value: 1, token: 1, version: 0 }),
  ).rejects.toThrow(/redis writeRecord on .*acknowledged by 0 of the 1/)
})

it('starts no failover grace on a fresh master, nor when the client reconnects to it', async () => {
  const { backend: b, client } = backend()
  const first = await ask(b, 'reconnect', 'a')
  expect(first.acquired).toBe(true)
  await b.release({ resource: 'reconnect', candidate: 'a' })
  client.disconnect(true) // reconnects
  const again = await ask(b, 'reconnect', 'b')
  expect(again.acquired).toBe(true)
  expect(again.acquired && first.acquired && again.token > first.token).toBe(true)
})
