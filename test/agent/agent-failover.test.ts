// Failover of the designated process: a real SIGKILL of the worker running a call.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DesignatedLostError, ProcessAgent, startAgent, stopAgent } from '../../src/agent/index.js'
import {
  failure,
  forkWorkers,
  setupAgentPrimary,
  stopWorker,
  type TestWorker,
  value,
} from './fixture.js'

setupAgentPrimary('json')
let agent: ProcessAgent
let workers: TestWorker[] = []

type Who = { workerId: number; token: number; designated: boolean }

beforeAll(async () => {
  agent = startAgent({ onError: () => {} })
  // A 60 s lease: a successor that takes over sooner was handed the grant, not left to wait.
  workers = await forkWorkers(5, { TEST_LEASE_MS: '60000' })
})
afterAll(async () => {
  await Promise.all(workers.map((w) => stopWorker(w.worker)))
  await stopAgent()
})

describe('agent failover', () => {
  it('fails the calls in flight on a killed designated worker with a retryable error; the next call runs on the successor', async () => {
    const first = await agent.call<Who>('whoami')
    const designated = workers.find((w) => w.worker.id === first.workerId)!
    const caller = workers.find((w) => w !== designated)!
    // Two calls the designated worker is running: one from a worker, one from the primary.
    const fromWorker = caller.run('call', { name: 'sleep', args: [60_000], timeoutMs: 60_000 })
    const fromPrimary = agent
      .call('sleep', [60_000], { timeoutMs: 60_000 })
      .catch((e: unknown) => e)
    await new Promise((r) => setTimeout(r, 300))
    designated.worker.process.kill('SIGKILL')

    const workerError = failure(await fromWorker)
    expect(workerError).toMatchObject({
      className: 'DesignatedLostError',
      code: 'ERR_CONCLAVE_AGENT_DESIGNATED_LOST',
      retryable: true,
    })
    const primaryError = await fromPrimary
    expect(primaryError).toBeInstanceOf(DesignatedLostError)
    expect((primaryError as DesignatedLostError).retryable).toBe(true)

    // The retry waits for the successor (no lease wait: the hub drops a dead worker's grant).
    const next = value<Who>(
      await caller.run('call', { name: 'whoami', args: [], timeoutMs: 10_000 }),
    )
    expect(next.workerId).not.toBe(first.workerId)
    expect(workers.map((w) => w.worker.id)).toContain(next.workerId)
    expect(next.token).toBeGreaterThan(first.token)
    expect((await agent.call<Who>('whoami')).workerId).toBe(next.workerId)

    // A gather skips the dead worker: it is no longer a worker of the cluster.
    const entries = await agent.gather('self', [], { timeoutMs: 5_000 })
    expect(entries.map((e) => e.ok)).toEqual([true, true, true, true])
    workers = workers.filter((w) => w !== designated)
  })

  it('hands the designated role over at once when its agent closes', async () => {
    const before = await agent.call<Who>('whoami')
    const designated = workers.find((w) => w.worker.id === before.workerId)!
    value(await designated.run('stop-agent'))
    const after = await agent.call<Who>('whoami', [], { timeoutMs: 20_000 })
    expect(after.workerId).not.toBe(before.workerId)
    expect(after.token).toBeGreaterThan(before.token)
    // The lease is 60 s and the call waited at most 20 s: the grant was released, not expired.
    await stopWorker(designated.worker)
    workers = workers.filter((w) => w !== designated)
  })

  it('cancels the handler when the calling worker exits mid-call', async () => {
    const who = await agent.call<Who>('whoami')
    const caller = workers.find((w) => w.worker.id !== who.workerId)!
    const pending = caller.run('call', { name: 'sleep', args: [60_000], timeoutMs: 60_000 })
    pending.catch(() => {})
    await new Promise((r) => setTimeout(r, 300))
    expect(await agent.call('last-abort')).toBe(null)
    caller.worker.process.kill('SIGKILL')
    let seen: unknown = null
    for (let i = 0; i < 100 && !seen; i++) {
      seen = await agent.call('last-abort')
      if (!seen) await new Promise((r) => setTimeout(r, 50))
    }
    expect(seen).toMatch(/cancelled/)
    workers = workers.filter((w) => w !== caller)
  })

  it('gives a worker that exits during a gather a lost entry and a slow one a timeout entry', async () => {
    const [slow, doomed] = workers as [TestWorker, TestWorker]
    const pending = agent.gather<{ workerId: number }>('sleep', [60_000], { timeoutMs: 1_500 })
    await new Promise((r) => setTimeout(r, 300))
    doomed.worker.process.kill('SIGKILL')
    const entries = await pending
    expect(entries.map((e) => e.workerId)).toEqual(
      [slow.worker.id, doomed.worker.id].sort((x, y) => x - y),
    )
    const bySlow = entries.find((e) => e.workerId === slow.worker.id)!
    const byDoomed = entries.find((e) => e.workerId === doomed.worker.id)!
    expect(bySlow.ok).toBe(false)
    if (!bySlow.ok) expect(bySlow.error).toMatchObject({ code: 'ERR_CONCLAVE_AGENT_TIMEOUT' })
    expect(byDoomed.ok).toBe(false)
    if (!byDoomed.ok) {
      expect(byDoomed.error).toMatchObject({
        code: 'ERR_CONCLAVE_AGENT_WORKER_LOST',
        retryable: true,
      })
    }
    workers = [slow]
  })

  it('routes around a hung designated worker once its lease runs out, and it stays out when resumed', async () => {
    await Promise.all(workers.map((w) => stopWorker(w.worker)))
    workers = await forkWorkers(2, { TEST_LEASE_MS: '3000' })
    const before = await agent.call<Who>('whoami')
    const hung = workers.find((w) => w.worker.id === before.workerId)!
    const other = workers.find((w) => w !== hung)!
    hung.worker.process.kill('SIGSTOP')
    try {
      // Handed to the hung worker: fails once its grant expires (3 s lease), retryable...
      const lost = await agent.call('whoami', [], { timeoutMs: 20_000 }).catch((e: unknown) => e)
      expect(lost).toBeInstanceOf(DesignatedLostError)
      expect((lost as DesignatedLostError).retryable).toBe(true)
      expect((lost as DesignatedLostError).message).toMatch(/lost its role/)
      // ...and the retry runs on the successor.
      const after = await agent.call<Who>('whoami', [], { timeoutMs: 20_000 })
      expect(after.workerId).toBe(other.worker.id)
      expect(after.token).toBeGreaterThan(before.token)
    } finally {
      hung.worker.process.kill('SIGCONT')
    }
    // Resumed, the old holder knows its term is over (its own clock) and serves nothing.
    expect(value(await hung.run('designated'))).toBe(false)
    const who = value<Who>(await hung.run('call', { name: 'whoami', args: [] }))
    expect(who.workerId).toBe(other.worker.id)
  })
})
