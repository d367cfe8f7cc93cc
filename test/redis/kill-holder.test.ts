// A holder process is SIGKILLed: another candidate wins, but only once the dead holder's lease
// has run out on the server, and without polling (its own lease is far longer than the test).
import { fork, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { redisBackend } from '../../src/backends/redis/index.js'
import { Election } from '../../src/election.js'
import { CANDIDATE_FILE, candidateArgs } from '../../testkit/candidate.js'
import { startRedis, type RedisServer } from '../../testkit/index.js'
import { fastFailingClient } from './helpers.js'

let server: RedisServer
const children: ChildProcess[] = []

beforeAll(async () => {
  server = await startRedis()
})
afterAll(async () => {
  for (const child of children) child.kill('SIGKILL')
  await server?.stop()
})

it('fails over from a SIGKILLed holder process after its lease, not before', async () => {
  const lease = 1_500
  const resource = `kill/${randomBytes(4).toString('hex')}`
  const child = fork(CANDIDATE_FILE, candidateArgs(server.url, resource, { leaseMs: lease }), {
    execArgv: ['--import', 'tsx'],
    stdio: 'inherit',
  })
  children.push(child)
  const elected = await new Promise<{ token: number; candidate: string }>((resolve, reject) => {
    child.on('message', (m: { type: string; token: number; candidate: string }) => {
      if (m.type === 'elected') resolve(m)
    })
    child.once('exit', (code) => reject(new Error(`candidate exited early (${code})`)))
  })

  const clients = [fastFailingClient(server.url), fastFailingClient(server.url)]
  const [waiterBackend, checker] = clients.map((client) =>
    // The server was started empty: no startup grace to hold back the 60 s lease.
    redisBackend({ client, startupGrace: false }),
  )
  // A waiter whose own lease (its polling fallback) is far beyond this test's timeout.
  const waiter = new Election(waiterBackend!, resource, { leaseMs: 60_000 })
  const errors: Error[] = []
  waiter.on('error', (e) => errors.push(e))
  const waiting = waiter.campaign()
  let waiterElectedAt = 0
  void waiting.then(() => (waiterElectedAt = performance.now()))

  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGKILL')
  await exited
  // What the server says right after the kill: the dead holder still has this much lease.
  const sampleSentAt = performance.now()
  const holders = await checker!.holders(resource)
  expect(holders.map((h) => h.candidate)).toEqual([elected.candidate])
  const remaining = holders[0]!.remainingMs

  const term = await waiting
  expect(term.token).toBeGreaterThan(elected.token)
  // Not before the killed holder's grant ran out on the server (1 ms rounding of remainingMs)...
  expect(waiterElectedAt - sampleSentAt).toBeGreaterThanOrEqual(remaining - 2)
  // ...and woken by the backend's remaining time, long before its own 60 s polling fallback.
  expect(waiterElectedAt - sampleSentAt).toBeLessThan(10 * lease)
  expect((await checker!.holders(resource)).map((h) => h.candidate)).toEqual([waiter.id])

  await waiter.close()
  await Promise.all([waiterBackend!.close(), checker!.close()])
  for (const client of clients) client.disconnect()
  expect(errors).toEqual([])
})
