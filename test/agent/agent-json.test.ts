// The agent over real forked workers with serialization 'json'; the test process is the primary.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  AgentTimeoutError,
  NotSerializableError,
  ProcessAgent,
  RemoteError,
  startAgent,
  stopAgent,
} from '../../src/agent/index.js'
import {
  failure,
  forkWorkers,
  setupAgentPrimary,
  stopWorker,
  type TestWorker,
  value,
} from './fixture.js'

setupAgentPrimary('json')
const primaryErrors: Error[] = []
let agent: ProcessAgent
let workers: TestWorker[] = []

type Who = {
  workerId: number
  pid: number
  designated: boolean
  token: number
  from: { workerId: number }
}

beforeAll(async () => {
  agent = startAgent({ onError: (e) => primaryErrors.push(e), timeoutMs: 10_000 })
  workers = await forkWorkers(3)
})
afterAll(async () => {
  await Promise.all(workers.map((w) => stopWorker(w.worker)))
  await stopAgent()
})

describe('agent (json)', () => {
  it('runs a call in the designated worker, from the primary and from every worker', async () => {
    const fromPrimary = await agent.call<Who>('whoami')
    expect(fromPrimary.designated).toBe(true)
    expect(fromPrimary.from.workerId).toBe(0)
    expect(fromPrimary.token).toBeGreaterThan(0)
    const ids = workers.map((w) => w.worker.id)
    expect(ids).toContain(fromPrimary.workerId)
    for (const w of workers) {
      const who = value<Who>(await w.run('call', { name: 'whoami', args: [] }))
      // Every caller reaches the same designated process; the designated one runs it locally.
      expect(who.workerId).toBe(fromPrimary.workerId)
      expect(who.designated).toBe(true)
      expect(who.from.workerId).toBe(w.worker.id)
    }
    const designated = await Promise.all(
      workers.map(async (w) => value<boolean>(await w.run('designated'))),
    )
    expect(designated.filter(Boolean)).toHaveLength(1)
  })

  it('keeps state in one place: a decorated method (standard and legacy) and a shared cache', async () => {
    const counts: number[] = []
    const served = new Set<number>()
    for (const w of [...workers, ...workers]) {
      const r = value<{ count: number; workerId: number }>(await w.run('tally', { by: 1 }))
      counts.push(r.count)
      served.add(r.workerId)
    }
    expect(counts).toEqual([1, 2, 3, 4, 5, 6])
    expect(served.size).toBe(1)
    const hits: number[] = []
    for (const w of workers)
      hits.push(value<{ hits: number }>(await w.run('legacy', { by: 2 })).hits)
    expect(hits).toEqual([2, 4, 6])
    await value(
      await workers[0]!.run('call', { name: 'cache-set', args: ['k', { v: [1, 'two'] }] }),
    )
    expect(value(await workers[2]!.run('call', { name: 'cache-get', args: ['k'] }))).toEqual({
      v: [1, 'two'],
    })
    expect(await agent.call('cache-get', ['k'])).toEqual({ v: [1, 'two'] })
  })

  it('rebuilds a remote error with its name, message, code and stack', async () => {
    const error = await agent.call('fail').catch((e: unknown) => e)
    expect(error).toBeInstanceOf(RemoteError)
    expect(error).toMatchObject({
      name: 'RangeError',
      message: 'the handler failed on purpose',
      code: 'E_TEST_FAIL',
    })
    expect((error as Error).stack).toMatch(
      /RangeError: the handler failed on purpose\n\s+at .*worker\.ts/,
    )
    const fromWorker = failure(await workers[1]!.run('call', { name: 'fail', args: [] }))
    expect(fromWorker).toMatchObject({
      name: 'RangeError',
      code: 'E_TEST_FAIL',
      className: 'RemoteError',
    })
    const missing = failure(await workers[1]!.run('call', { name: 'no-such-handler', args: [] }))
    expect(missing).toMatchObject({
      code: 'ERR_CONCLAVE_AGENT_NO_HANDLER',
      className: 'NoHandlerError',
    })
  })

  it('refuses values JSON cannot carry before sending, naming the path', async () => {
    const cyclic: Record<string, unknown> = { a: 1 }
    cyclic.self = cyclic
    const cases: [unknown, RegExp][] = [
      [{ tags: new Map([['a', 1]]) }, /^args\[0\]\.tags$/],
      [{ n: 10n }, /^args\[0\]\.n$/],
      [[1, () => 2], /^args\[0\]\[1\]$/],
      [cyclic, /^args\[0\]\.self$/],
      [{ when: new Date(0) }, /^args\[0\]\.when$/],
      [{ x: NaN }, /^args\[0\]\.x$/],
    ]
    for (const [arg, path] of cases) {
      const error = await agent.call('echo', [arg]).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(NotSerializableError)
      expect((error as NotSerializableError).path).toMatch(path)
      expect((error as Error).message).toMatch(/serialization "json"/)
    }
    const fromWorker = failure(await workers[0]!.run('call', { name: 'bad-result', args: ['map'] }))
    expect(fromWorker).toMatchObject({
      code: 'ERR_CONCLAVE_AGENT_NOT_SERIALIZABLE',
      className: 'NotSerializableError',
    })
    expect(fromWorker.path).toBe('the result of "bad-result".nested')
    const bigint = await agent.call('bad-result', ['bigint']).catch((e: unknown) => e)
    expect(bigint).toBeInstanceOf(NotSerializableError)
    expect((bigint as NotSerializableError).path).toBe('the result of "bad-result"[0]')
  })

  it('broadcasts to every worker and gathers one entry each, in worker order', async () => {
    await agent.broadcast('bump', [3])
    await workers[1]!.run('broadcast', { name: 'bump', args: [4] })
    // A broadcast has no answer: poll the effect.
    let entries: { workerId: number; ok: boolean; value?: number }[] = []
    for (let i = 0; i < 50; i++) {
      entries = await agent.gather<number>('bumps')
      if (entries.every((e) => e.ok && e.value === 7)) break
      await new Promise((r) => setTimeout(r, 50))
    }
    expect(entries.map((e) => e.workerId)).toEqual(
      workers.map((w) => w.worker.id).sort((a, b) => a - b),
    )
    expect(entries.map((e) => e.value)).toEqual([7, 7, 7])
    const fromWorker = value<{ workerId: number; ok: boolean; value: unknown }[]>(
      await workers[2]!.run('gather', { name: 'self', args: [] }),
    )
    expect(fromWorker.map((e) => e.ok)).toEqual([true, true, true])
    expect(fromWorker.map((e) => (e.value as { workerId: number }).workerId)).toEqual(
      entries.map((e) => e.workerId),
    )
  })

  it('gives a hung worker a timeout entry and the others their values', async () => {
    const hung = workers[1]!
    hung.worker.process.kill('SIGSTOP')
    try {
      const started = Date.now()
      const entries = await agent.gather('self', [], { timeoutMs: 800 })
      expect(Date.now() - started).toBeGreaterThanOrEqual(700)
      for (const entry of entries) {
        if (entry.workerId === hung.worker.id) {
          expect(entry.ok).toBe(false)
          if (!entry.ok) expect(entry.error).toBeInstanceOf(AgentTimeoutError)
        } else {
          expect(entry).toMatchObject({ ok: true, value: { workerId: entry.workerId } })
        }
      }
      expect(entries).toHaveLength(3)
      const fromWorker = value<{ workerId: number; ok: boolean; error?: { code: string } }[]>(
        await workers[0]!.run('gather', { name: 'self', args: [], timeoutMs: 800 }),
      )
      expect(fromWorker.filter((e) => !e.ok).map((e) => [e.workerId, e.error?.code])).toEqual([
        [hung.worker.id, 'ERR_CONCLAVE_AGENT_TIMEOUT'],
      ])
    } finally {
      hung.worker.process.kill('SIGCONT')
    }
  })

  it('aborts a call: the caller rejects with the reason, the handler sees its signal abort', async () => {
    const reply = failure(
      await workers[0]!.run('call-abort', { name: 'sleep', args: [20_000], abortAfterMs: 300 }),
    )
    expect(reply.message).toBe('caller gave up')
    // The cancel reached the designated process: its handler's signal aborted.
    let seen: unknown = null
    for (let i = 0; i < 100 && !seen; i++) {
      seen = await agent.call('last-abort')
      if (!seen) await new Promise((r) => setTimeout(r, 50))
    }
    expect(seen).toMatch(/cancelled/)
    const controller = new AbortController()
    const pending = agent.call('sleep', [20_000], { signal: controller.signal })
    controller.abort(new Error('primary gave up'))
    await expect(pending).rejects.toThrow('primary gave up')
    const timedOut = await agent
      .call('sleep', [20_000], { timeoutMs: 300 })
      .catch((e: unknown) => e)
    expect(timedOut).toBeInstanceOf(AgentTimeoutError)
    expect((timedOut as AgentTimeoutError).retryable).toBe(true)
  })

  it('answers malformed agent messages with an error, reports id-less ones, and keeps serving', async () => {
    const before = primaryErrors.length
    const ns = 'conclave-agent'
    const replies = value<Record<string, unknown>[]>(
      await workers[2]!.run('raw', {
        messages: [
          { [ns]: 1 },
          { [ns]: 1, type: 'explode', id: 'm1' },
          { [ns]: 1, type: 'call', id: 'm2', name: '', args: [], timeoutMs: 100 },
          { [ns]: 1, type: 'call', id: 'm3', name: 'echo', args: 'nope', timeoutMs: 100 },
          { [ns]: 1, type: 'call', id: 'm4', name: 'echo', args: [], timeoutMs: -5 },
          { [ns]: 1, type: 'gather', id: 'x'.repeat(500), name: 'self', args: [], timeoutMs: 100 },
          { [ns]: 1, type: 'reply', id: 'm5', ok: 'maybe' },
          { [ns]: 1, type: 'broadcast', name: 42, args: [] },
          { [ns]: 1, type: 'call', id: 'm6', name: 'echo', args: ['still fine'], timeoutMs: 5_000 },
        ],
      }),
    )
    const byId = new Map(replies.map((r) => [r.id, r]))
    for (const id of ['m1', 'm2', 'm3', 'm4', 'm5']) {
      expect(byId.get(id), id).toMatchObject({
        type: 'result',
        ok: false,
        error: { code: 'ERR_CONCLAVE_PROTOCOL' },
      })
    }
    expect((byId.get('m1')!.error as { message: string }).message).toMatch(/type: "explode"/)
    expect((byId.get('m4')!.error as { message: string }).message).toMatch(/timeoutMs: -5/)
    expect(byId.get('m6')).toMatchObject({ ok: true, value: 'still fine' })
    // Without a usable id nothing can be answered: the primary reports them instead.
    const reported = primaryErrors
      .slice(before)
      .filter((e) => (e as { code?: string }).code === 'ERR_CONCLAVE_PROTOCOL')
      .map((e) => e.message)
    expect(reported.length).toBe(8)
    expect(reported.filter((m) => /Invalid agent message (type|id|name)/.test(m)).length).toBe(5)
    expect(workers[2]!.worker.isConnected()).toBe(true)
    expect(value(await workers[2]!.run('call', { name: 'echo', args: [1] }))).toBe(1)
  })

  it('reports every worker healthy', async () => {
    const health = value<{ ok: boolean; workers: { status: string }[] }>(
      await workers[0]!.run('health'),
    )
    expect(health.ok).toBe(true)
    expect(health.workers.map((w) => w.status)).toEqual(['healthy', 'healthy', 'healthy'])
  })
})
