// serialization 'advanced', and the primary as the designated process (designated: 'primary').
import cluster from 'node:cluster'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  currentCall,
  NotSerializableError,
  ProcessAgent,
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

setupAgentPrimary('advanced')
let agent: ProcessAgent
let workers: TestWorker[] = []
const served: number[] = []

beforeAll(async () => {
  agent = startAgent({ designated: 'primary', onError: () => {} })
  // The same registrations the workers make, here in the primary, which serves the calls.
  agent.register('whoami', () => {
    served.push(currentCall()!.from.workerId)
    return {
      workerId: 0,
      pid: process.pid,
      designated: agent.isDesignated,
      token: currentCall()!.token,
    }
  })
  agent.register('echo', (v: unknown) => v)
  agent.register('bad-result', () => ({ nested: { fn: () => 1 } }))
  workers = await forkWorkers(2)
  expect(cluster.isPrimary).toBe(true)
})
afterAll(async () => {
  await Promise.all(workers.map((w) => stopWorker(w.worker)))
  await stopAgent()
})

const rich = () => ({
  map: new Map<unknown, unknown>([
    ['a', 1],
    [2, new Set(['x'])],
  ]),
  set: new Set([1, 2, 3]),
  when: new Date(1_700_000_000_000),
  big: 2n ** 70n,
  bytes: new Uint8Array([1, 2, 255]),
  floats: new Float64Array([0.5, NaN]),
  nested: { undef: undefined, inf: Infinity },
})

describe('agent (advanced, primary designated)', () => {
  it('routes worker calls to the primary when it is the designated process', async () => {
    const who = value<{ workerId: number; designated: boolean; token: number }>(
      await workers[0]!.run('call', { name: 'whoami', args: [] }),
    )
    expect(who).toMatchObject({ workerId: 0, designated: true })
    expect(who.token).toBeGreaterThan(0)
    expect(served).toContain(workers[0]!.worker.id)
    expect(agent.isDesignated).toBe(true)
    expect(value(await workers[1]!.run('designated'))).toBe(false)
  })

  it('carries Map, Set, Date, BigInt and typed arrays both ways', async () => {
    // worker → primary → worker
    const back = value(await workers[1]!.run('call', { name: 'echo', args: [rich()] }))
    expect(back).toEqual(rich())
    const b = back as ReturnType<typeof rich>
    expect(b.map).toBeInstanceOf(Map)
    expect(b.set).toBeInstanceOf(Set)
    expect(b.when).toBeInstanceOf(Date)
    expect(typeof b.big).toBe('bigint')
    expect(b.bytes).toBeInstanceOf(Uint8Array)
    // primary → every worker → primary
    const entries = await agent.gather<ReturnType<typeof rich>>('echo', [rich()])
    expect(entries).toHaveLength(2)
    for (const entry of entries) {
      expect(entry.ok).toBe(true)
      if (entry.ok) {
        expect(entry.value).toEqual(rich())
        expect(entry.value.big).toBe(2n ** 70n)
        expect(entry.value.map.get(2)).toBeInstanceOf(Set)
      }
    }
    // Cycles are fine for structured clone.
    const cyclic: Record<string, unknown> = { a: 1 }
    cyclic.self = cyclic
    const echoed = await agent.gather<Record<string, unknown>>('echo', [cyclic])
    for (const entry of echoed) if (entry.ok) expect(entry.value.self).toBe(entry.value)
  })

  it('refuses functions, symbols and class instances before sending, naming the path', async () => {
    class Point {
      constructor(
        public x: number,
        public y: number,
      ) {}
    }
    const cases: [unknown, string][] = [
      [{ cb: () => 1 }, 'args[0].cb'],
      [[Symbol('s')], 'args[0][0]'],
      [{ p: new Point(1, 2) }, 'args[0].p'],
      [new Map([['k', { deep: () => 1 }]]), 'args[0].get("k").deep'],
    ]
    for (const [arg, path] of cases) {
      const error = await agent.gather('echo', [arg]).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(NotSerializableError)
      expect(error).toMatchObject({ path, serialization: 'advanced' })
    }
    const fromWorker = failure(await workers[0]!.run('call', { name: 'bad-result', args: [] }))
    expect(fromWorker).toMatchObject({
      className: 'NotSerializableError',
      path: 'the result of "bad-result".nested.fn',
    })
    expect(fromWorker.message).toMatch(/serialization "advanced"/)
  })
})
