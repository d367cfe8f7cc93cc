// A restart from an older RDB snapshot brings back a grant its holder released since, and loses
// the grant made after that release. The candidate asking again must not have its old grant
// extended within the startup grace: the lost grant's holder may still believe in its term.
import { randomBytes } from 'node:crypto'
import type { Redis } from 'ioredis'
import { afterAll, beforeAll, expect, it } from 'vitest'
import type { AcquireResult, Backend } from '../../src/backend.js'
import { redisBackend } from '../../src/backends/redis/index.js'
import { startRedis, type RedisServer } from '../../testkit/index.js'
import { freePort } from '../../testkit/ports.js'
import { fastFailingClient, sleep } from './helpers.js'

let server: RedisServer
const clients: Redis[] = []
const backends: Backend[] = []

beforeAll(async () => {
  server = await startRedis()
})
afterAll(async () => {
  await Promise.all(backends.map((b) => b.close()))
  for (const client of clients) client.disconnect()
  await server?.stop()
})

/** The startup grace only by default: a restart may give the server another replication id. */
function backend(grace: 'startup' | 'failover' = 'startup'): Backend {
  const client = fastFailingClient(server.url, { commandTimeout: 500 })
  clients.push(client)
  const b = redisBackend({
    client,
    timeoutMs: 1_000,
    startupGrace: grace === 'startup',
    failoverGrace: grace === 'failover',
  })
  backends.push(b)
  return b
}

/** Asks until an answer comes (the first calls after a restart may fail while reconnecting). */
async function ask(b: Backend, resource: string, candidate: string, leaseMs: number) {
  for (;;) {
    const answer: AcquireResult | undefined = await b
      .acquire({ resource, candidate, tickets: 1, leaseMs, metadata: null })
      .catch(() => undefined)
    if (answer) return answer
    await sleep(100)
  }
}

it('does not extend a grant brought back by a restart within the startup grace', async () => {
  const lease = 8_000
  const resource = `reask/${randomBytes(4).toString('hex')}`
  const a = backend()
  const b = backend()
  const admin = fastFailingClient(server.url)
  clients.push(admin)

  // A's grant (waiting out the server's own startup grace first).
  let first = await ask(a, resource, 'A', lease)
  while (!first.acquired) {
    await sleep(Math.min(first.retryInMs, 250))
    first = await ask(a, resource, 'A', lease)
  }
  const tokenA = first.token
  await admin.save() // the snapshot has A's grant
  await a.release({ resource, candidate: 'A', token: tokenA })
  const granted = await ask(b, resource, 'B', lease)
  expect(granted.acquired, 'B granted after A released').toBe(true)

  // kill -9, restart from the snapshot: A's grant back, unexpired; B's gone, B still holds.
  await server.restart()
  const again = await ask(a, resource, 'A', lease)
  expect(again.acquired, 'A granted again while B may still hold').toBe(false)
  if (!again.acquired) {
    expect(again.wait?.code).toBe('startup-grace')
    expect(again.retryInMs).toBeGreaterThan(0)
    // The grant is untouched: still A's, with its old token.
    expect(again.holders.map((h) => [h.candidate, h.token])).toEqual([['A', tokenA]])
  }
}, 60_000)

it('does not extend a grant the server has within the failover grace', async () => {
  const lease = 8_000
  const resource = `reask-failover/${randomBytes(4).toString('hex')}`
  const a = backend('failover')
  const admin = fastFailingClient(server.url)
  clients.push(admin)
  const first = await ask(a, resource, 'A', lease)
  expect(first.acquired).toBe(true)
  const tokenA = first.acquired ? first.token : 0
  // A new replication history, as a promoted replica has (the data kept: the master named
  // never answers, so nothing is synced): its grants may include one released on the old master.
  const unused = await freePort()
  await admin.call('REPLICAOF', '127.0.0.1', String(unused))
  await admin.call('REPLICAOF', 'NO', 'ONE')
  const again = await ask(a, resource, 'A', lease)
  expect(again.acquired, 'A granted again within the failover grace').toBe(false)
  if (!again.acquired) {
    expect(again.wait?.code).toBe('failover-grace')
    expect(again.holders.map((h) => [h.candidate, h.token])).toEqual([['A', tokenA]])
  }
}, 60_000)
