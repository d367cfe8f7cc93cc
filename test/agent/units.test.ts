// In-process checks of the agent's pure parts: value checks, error rebuilding, metrics merging
// (against prom-client's own aggregation), option validation. No cluster here.
import { AggregatorRegistry, Counter, Gauge, Histogram, Registry, Summary } from 'prom-client'
import { describe, expect, it } from 'vitest'
import { OptionsError } from '../../src/errors.js'
import {
  AgentTimeoutError,
  DesignatedLostError,
  NotSerializableError,
  ProcessAgent,
  RemoteError,
} from '../../src/agent/index.js'
import {
  aggregate,
  decodeMetrics,
  encodeMetrics,
  type MetricJson,
  renderPrometheus,
} from '../../src/agent/metrics.js'
import { assertCarriable } from '../../src/agent/serialize.js'
import { errorFromWire, errorToWire, parseFromWorker } from '../../src/agent/protocol.js'

const pathOf = (value: unknown, mode: 'json' | 'advanced') => {
  try {
    assertCarriable(value, mode, 'v')
    return undefined
  } catch (error) {
    expect(error).toBeInstanceOf(NotSerializableError)
    return (error as NotSerializableError).path
  }
}

describe('assertCarriable', () => {
  it('accepts plain data in both modes and names the first bad part', () => {
    const plain = { a: [1, 'x', true, null, { b: { c: [] } }], u: undefined, 'odd key': 2 }
    expect(pathOf(plain, 'json')).toBeUndefined()
    expect(pathOf(plain, 'advanced')).toBeUndefined()
    expect(pathOf({ 'odd key': new Set() }, 'json')).toBe('v["odd key"]')
    expect(pathOf([1, [2, [3, Infinity]]], 'json')).toBe('v[1][1][1]')
    expect(pathOf([1, undefined], 'json')).toBe('v[1]')
    expect(pathOf(Object.create(null) as object, 'json')).toBeUndefined()
    expect(pathOf(5n, 'json')).toBe('v')
    expect(pathOf(5n, 'advanced')).toBeUndefined()
    expect(pathOf(Symbol('x'), 'advanced')).toBe('v')
    expect(pathOf(new Set([new Map([[1, { f: () => 1 }]])]), 'advanced')).toBe(
      'v.<item 0>.get(1).f',
    )
    expect(
      pathOf({ e: new TypeError('x'), r: /x/g, d: new DataView(new ArrayBuffer(2)) }, 'advanced'),
    ).toBeUndefined()
    expect(pathOf(new Promise(() => {}), 'advanced')).toBe('v')
    // Shared references are not cycles.
    const shared = { x: 1 }
    expect(pathOf([shared, shared], 'json')).toBeUndefined()
    let deep: unknown = 1
    for (let i = 0; i < 300; i++) deep = [deep]
    expect(pathOf(deep, 'json')).toMatch(/^v(\[0\])+$/)
  })
})

describe('errors across IPC', () => {
  it('rebuilds the agent’s own errors as their classes and others as RemoteError', () => {
    const lost = errorFromWire(errorToWire(new DesignatedLostError('gone')), {
      workerId: 2,
      pid: 9,
    })
    expect(lost).toBeInstanceOf(DesignatedLostError)
    expect(lost).toMatchObject({
      retryable: true,
      code: 'ERR_CONCLAVE_AGENT_DESIGNATED_LOST',
      message: 'gone',
    })
    expect(
      errorFromWire(errorToWire(new AgentTimeoutError('slow')), { workerId: 2, pid: 9 }),
    ).toBeInstanceOf(AgentTimeoutError)
    const original = Object.assign(new SyntaxError('bad'), { code: 42 })
    const remote = errorFromWire(errorToWire(original), { workerId: 3, pid: 10 }) as RemoteError
    expect(remote).toBeInstanceOf(RemoteError)
    expect(remote).toMatchObject({
      name: 'SyntaxError',
      message: 'bad',
      code: 42,
      remote: { workerId: 3, pid: 10 },
    })
    expect(remote.stack).toContain(original.stack)
    expect(remote.stack).toMatch(/worker 3, pid 10/)
    expect(errorFromWire(errorToWire('a string'), { workerId: 1, pid: 1 }).message).toBe('a string')
    expect(errorFromWire(null, { workerId: 1, pid: 1 }).message).toBe('unknown error')
  })
})

describe('protocol validation', () => {
  it('names the broken field', () => {
    const ns = { 'conclave-agent': 1 }
    expect(() =>
      parseFromWorker({ ...ns, type: 'call', id: 'a', name: 'n', args: [], timeoutMs: 1.5 }),
    ).toThrow(/timeoutMs: 1\.5/)
    expect(() => parseFromWorker({ ...ns, type: 'reply', id: 'a', ok: false, error: 'x' })).toThrow(
      /error: "x"/,
    )
    expect(() => parseFromWorker({ ...ns, type: 'cancel' })).toThrow(/id/)
    expect(parseFromWorker({ ...ns, type: 'hello' })).toEqual({ type: 'hello' })
  })
})

describe('metrics merging', () => {
  async function workerParts(n: number, content = false): Promise<MetricJson[][]> {
    const parts: MetricJson[][] = []
    for (let w = 1; w <= n; w++) {
      const registry = new Registry()
      const c = new Counter({
        name: 'c_total',
        help: 'a "counter"\\ with\nnewline',
        labelNames: ['b', 'a'],
        registers: [registry],
      })
      // Label order differs between workers: still one series.
      c.inc(w % 2 ? { b: 'x', a: 'y"q' } : { a: 'y"q', b: 'x' }, w)
      c.inc({ a: 'only-in-' + w, b: 'z' })
      new Gauge({ name: 'g_avg', help: 'avg', aggregator: 'average', registers: [registry] }).set(w)
      new Gauge({ name: 'g_nan', help: 'nan', aggregator: 'max', registers: [registry] }).set(
        w === 2 ? NaN : w,
      )
      new Gauge({ name: 'g_inf', help: 'inf', aggregator: 'min', registers: [registry] }).set(
        -Infinity,
      )
      const h = new Histogram({
        name: 'h',
        help: 'h',
        labelNames: ['r'],
        buckets: [1, 2],
        registers: [registry],
      })
      h.observe({ r: 'a' }, w)
      const s = new Summary({ name: 's', help: 's', percentiles: [0.5], registers: [registry] })
      if (content) s.observe(w)
      parts.push((await registry.getMetricsAsJSON()) as unknown as MetricJson[])
    }
    return parts
  }

  it('renders byte for byte what prom-client renders, NaN and infinities included, after a trip through JSON', async () => {
    for (const content of [false, true]) {
      const parts = await workerParts(4, content)
      const expected = await AggregatorRegistry.aggregate(parts).metrics()
      const travelled = parts.map((p) =>
        decodeMetrics(JSON.parse(JSON.stringify(encodeMetrics(p)))),
      )
      const ours = renderPrometheus(aggregate(travelled))
      expect(ours).toBe(expected)
      expect(ours).toContain('g_inf -Inf')
      expect(ours).toContain('c_total{b="x",a="y\\"q"} 10')
    }
  })

  it('leaves out a metric with an unknown aggregator and says so', () => {
    const notes: string[] = []
    const merged = aggregate(
      [
        [
          {
            name: 'x',
            help: 'x',
            type: 'gauge',
            aggregator: 'median',
            values: [{ value: 1, labels: {} }],
          },
        ],
      ],
      notes,
    )
    expect(merged).toEqual([])
    expect(notes).toEqual(['metric x has an unknown aggregator "median"; left out'])
  })
})

describe('agent options', () => {
  it('rejects bad options naming the field, before starting anything', () => {
    const bad: [object, string][] = [
      [{ designated: 'anyone' }, 'designated'],
      [{ timeoutMs: 0 }, 'timeoutMs'],
      [{ gatherTimeoutMs: 1.5 }, 'gatherTimeoutMs'],
      [{ leaseMs: -1 }, 'leaseMs'],
      [{ resource: 'no spaces allowed' }, 'resource'],
      [{ namespace: 'conclave' }, 'namespace'],
      [{ onError: 'log' }, 'onError'],
      [{ timeout: 5 }, 'timeout'],
    ]
    for (const [options, field] of bad) {
      const error = (() => {
        try {
          new ProcessAgent(options)
        } catch (e) {
          return e
        }
      })()
      expect(error, field).toBeInstanceOf(OptionsError)
      expect((error as OptionsError).field).toBe(field)
    }
  })
})
