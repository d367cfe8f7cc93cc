// The health check: flips on an event loop stalled past a term's deadline (a real busy-wait on
// the real clock), and on a backend unreachable beyond the bound (a real redis-server, killed
// and restarted); served over a real HTTP endpoint.
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { memoryBackend } from '../../src/backends/memory.js'
import { redisBackend } from '../../src/backends/redis/index.js'
import { Election } from '../../src/election.js'
import { OptionsError, WorkError } from '../../src/errors.js'
import { healthCheck, HealthCheck, type HealthReport } from '../../src/health.js'
import { every } from '../../src/singleton.js'
import { startRedis, type RedisServer } from '../../testkit/index.js'

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

async function until(check: () => boolean, timeoutMs: number, what: string) {
  const end = performance.now() + timeoutMs
  while (!check()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(20)
  }
}

describe('HealthCheck', () => {
  let http: Server
  let url: string
  let health: HealthCheck | undefined

  beforeAll(async () => {
    http = createServer((req, res) => {
      if (health) health.handler()(req, res)
      else res.writeHead(500).end()
    })
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve))
    url = `http://127.0.0.1:${(http.address() as AddressInfo).port}/healthz`
  })
  afterAll(async () => {
    await new Promise((resolve) => http.close(resolve))
  })

  it('turns unhealthy when the event loop stalls past a term’s deadline, over HTTP too', async () => {
    const election = new Election(memoryBackend(), 'jobs/health', { leaseMs: 400 })
    health = healthCheck([election], { rememberMs: 1_000 })
    await election.campaign()
    let response = await fetch(url)
    expect(response.status).toBe(200)
    expect(((await response.json()) as HealthReport).elections[0]).toMatchObject({
      resource: 'jobs/health',
      leader: true,
    })

    // Block the loop for twice the lease: the term's deadline timer cannot fire.
    const stallUntil = performance.now() + 800
    while (performance.now() < stallUntil) {
      // busy
    }
    const during = health.check() // still inside the stall: the term has not stepped down
    expect(during.healthy).toBe(false)
    expect(during.problems.join('\n')).toMatch(/past its deadline and has not stepped down/)

    await sleep(20) // the deadline timer fires, late; the check remembers it
    const after = health.check()
    expect(election.isLeader).toBe(false)
    expect(after.healthy).toBe(false)
    expect(after.problems.join('\n')).toMatch(/ended \((expired|lost)\) \d+ ms past its deadline/)
    response = await fetch(url)
    expect(response.status).toBe(503)
    expect(((await response.json()) as HealthReport).healthy).toBe(false)

    await sleep(1_100) // rememberMs
    expect(health.check()).toMatchObject({ healthy: true, problems: [] })
    health.close()
    await election.close()
  })

  it('stays healthy through resign and close (ending early is fine)', async () => {
    const election = new Election(memoryBackend(), 'jobs/health-ok', { leaseMs: 400 })
    health = healthCheck([election])
    const term = await election.campaign()
    await sleep(450) // renewed past the first lease
    await term.resign()
    await election.campaign()
    await election.close()
    expect(health.check()).toMatchObject({ healthy: true, problems: [] })
    health.close()
  })

  it('does not take the work’s own errors (a throwing every() or run() callback) for an unreachable backend', async () => {
    const backend = memoryBackend()
    // Long leases: no renewal (a success) clears a failure within the test.
    const viaEvery = new Election(backend, 'jobs/health-every', { leaseMs: 60_000 })
    const viaRun = new Election(backend, 'jobs/health-run', { leaseMs: 60_000, retryMs: 20 })
    const errors: Error[] = []
    for (const election of [viaEvery, viaRun]) election.on('error', (error) => errors.push(error))
    // The strictest bound, and no probe to clear a failure within the test either.
    health = healthCheck([viaEvery, viaRun], { unreachableMs: 0, probeMs: 60_000 })
    const controller = new AbortController()
    const crash = () => {
      throw new Error('the job failed, the backend is fine')
    }
    const jobs = [
      every(viaEvery, 20, crash, { signal: controller.signal }),
      viaRun.run(crash, { signal: controller.signal }),
    ]
    await until(() => errors.length >= 4, 5_000, 'work errors')
    expect(errors.every((e) => e instanceof WorkError)).toBe(true)
    const report = health.check()
    expect(report).toMatchObject({ healthy: true, problems: [] })
    expect(report.elections.map((e) => e.failingForMs)).toEqual([undefined, undefined])
    controller.abort()
    await Promise.all(jobs)
    health.close()
    await Promise.all([viaEvery.close(), viaRun.close()])
  })

  it('refuses bad options', () => {
    expect(() => new HealthCheck({ unreachableMs: -5 })).toThrow(OptionsError)
    expect(() => new HealthCheck({ unreachable: 5 } as never)).toThrow(/not a health option/)
  })

  describe('with a redis-server that goes away', () => {
    let server: RedisServer
    beforeAll(async () => {
      server = await startRedis()
    }, 60_000)
    afterAll(async () => {
      await server?.stop()
    })

    it('turns unhealthy when the backend fails beyond unreachableMs, healthy again once it answers', async () => {
      const backend = redisBackend({ url: server.url, timeoutMs: 500 })
      const election = new Election(backend, 'jobs/health-redis', { leaseMs: 1_000 })
      election.on('error', () => {})
      const check = (health = healthCheck([election], { unreachableMs: 1_500, probeMs: 200 }))
      const running = election.run(
        (term) => new Promise((r) => term.signal.addEventListener('abort', r)),
      )
      try {
        await until(() => election.isLeader, 10_000, 'a term')
        expect(check.check().healthy).toBe(true)
        await server.kill()
        const killedAt = performance.now()
        await until(() => !check.check().healthy, 20_000, 'unhealthy')
        // Not before the bound: errors began after the kill.
        expect(performance.now() - killedAt).toBeGreaterThanOrEqual(1_500)
        expect(check.check().problems.join('\n')).toMatch(
          /the redis backend of "jobs\/health-redis" has failed for \d+ ms with no success \(bound 1500 ms\)/,
        )
        await server.restart()
        await until(() => check.check().healthy, 20_000, 'healthy again')
      } finally {
        check.close()
        await election.close()
        await running
        await backend.close()
      }
    }, 60_000)
  })
})
