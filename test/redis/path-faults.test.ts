// The holder's TCP path to redis is cut (black-holed or reset) by the fault proxy: its term
// ends before anyone else is granted, and it campaigns again once the path is back. The holder
// uses `{ url }`, so this also checks the defaults of a client the backend makes itself.
import { randomBytes } from 'node:crypto'
import type { Redis } from 'ioredis'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { redisBackend } from '../../src/backends/redis/index.js'
import { Election } from '../../src/election.js'
import type { Term } from '../../src/term.js'
import { startProxy, type CutMode, type FaultProxy } from '../../testkit/proxy.js'
import { startRedis, type RedisServer } from '../../testkit/index.js'
import { fastFailingClient, until } from './helpers.js'

let server: RedisServer

beforeAll(async () => {
  server = await startRedis()
})
afterAll(async () => {
  await server?.stop()
})

for (const mode of ['blackhole', 'reset'] as CutMode[]) {
  it(`steps down in time and campaigns again when the path comes back (${mode})`, async () => {
    const lease = 1_000
    const resource = `cut/${mode}/${randomBytes(4).toString('hex')}`
    let proxy: FaultProxy | undefined
    let client: Redis | undefined
    const cleanup: (() => Promise<unknown>)[] = []
    try {
      proxy = await startProxy({ targetPort: server.port })
      const holderBackend = redisBackend({ url: `redis://127.0.0.1:${proxy.port}` })
      const holder = new Election(holderBackend, resource, { leaseMs: lease })
      holder.on('error', () => {}) // the cut makes errors
      cleanup.push(
        () => holder.close(),
        () => holderBackend.close(),
      )
      const terms: Term[] = []
      void holder.run(async (term) => {
        terms.push(term)
        await new Promise((resolve) => term.signal.addEventListener('abort', resolve))
      })
      await until(() => terms.length === 1, 5_000, 'the holder elected')

      client = fastFailingClient(server.url)
      // The server was started empty for this file: no grant to lose, so no startup grace
      // (it would hold back a 60 s lease for 60 s of uptime).
      const otherBackend = redisBackend({ client, startupGrace: false })
      // Its 60 s lease keeps the resource while the holder's path comes back.
      const other = new Election(otherBackend, resource, { leaseMs: 60_000 })
      const errors: Error[] = []
      other.on('error', (e) => errors.push(e))
      cleanup.push(
        () => other.close(),
        () => otherBackend.close(),
      )
      const waiting = other.campaign()

      let endedAt = Infinity
      terms[0]!.signal.addEventListener('abort', () => (endedAt = performance.now()))
      proxy.cut({ mode })
      const taken = await waiting
      const grantedAt = performance.now()
      expect(endedAt).toBeLessThan(grantedAt)
      expect(terms[0]!.endReason).toBe('expired')
      expect(taken.token).toBeGreaterThan(terms[0]!.token)

      proxy.restore()
      // Late commands the black hole held are now delivered: none may disturb the new holder.
      await new Promise((resolve) => setTimeout(resolve, lease))
      expect(taken.active).toBe(true)
      expect((await otherBackend.holders(resource)).map((h) => h.candidate)).toEqual([other.id])
      await taken.resign()
      await until(() => terms.length === 2, 30 * lease, 'the holder elected again')
      expect(terms[1]!.token).toBeGreaterThan(taken.token)
      expect(errors).toEqual([])
    } finally {
      for (const fn of cleanup.reverse()) await fn()
      client?.disconnect()
      await proxy?.close()
    }
  })
}
