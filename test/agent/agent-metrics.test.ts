// clusterMetrics over 4 workers with real prom-client registries, and clusterHealth.
import {
  AggregatorRegistry,
  type MetricObjectWithValues,
  type MetricValue,
  Registry,
} from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  clusterHealth,
  clusterMetrics,
  collectClusterMetrics,
  ProcessAgent,
  startAgent,
  stopAgent,
} from '../../src/agent/index.js'
import {
  forkWorker,
  forkWorkers,
  setupAgentPrimary,
  stopWorker,
  type TestWorker,
  value,
} from './fixture.js'

setupAgentPrimary('json')
let agent: ProcessAgent
let workers: TestWorker[] = []

type Metric = MetricObjectWithValues<MetricValue<string>>

beforeAll(async () => {
  agent = startAgent({ onError: () => {} })
  workers = await forkWorkers(4)
})
afterAll(async () => {
  await Promise.all(workers.map((w) => stopWorker(w.worker)))
  await stopAgent()
})

/** `name{labels} value` lines of a Prometheus text, as a map. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue
    const at = line.lastIndexOf(' ')
    out.set(line.slice(0, at), Number(line.slice(at + 1)))
  }
  return out
}

describe('clusterMetrics', () => {
  it('merges 4 workers into the sum of their parts, by each metric’s aggregator, as prom-client does', async () => {
    const parts = (await agent.gather<Metric[]>('own-metrics')).map((e) => {
      if (!e.ok) throw e.error
      return e.value
    })
    expect(parts).toHaveLength(4)
    const ids = workers.map((w) => w.worker.id)
    const sum = (f: (id: number) => number) => ids.reduce((acc, id) => acc + f(id), 0)

    // From a worker (any worker can serve /metrics) and from the primary.
    const fromWorker = value<string>(await workers[2]!.run('metrics'))
    const fromPrimary = await clusterMetrics(null)
    for (const text of [fromWorker, fromPrimary]) {
      const s = samples(text)
      expect(s.get('test_requests_total{route="/a",code="200"}')).toBe(sum((id) => id * 10))
      expect(s.get('test_requests_total{route="/b\\\\x",code="500"}')).toBe(sum((id) => id))
      expect(s.get('test_started_max')).toBe(Math.max(...ids))
      expect(s.get('test_min')).toBe(Math.min(...ids))
      expect(s.get('test_avg')).toBe(sum((id) => id) / 4)
      expect(s.get('test_first')).toBe(7)
      expect([...s.keys()].some((k) => k.startsWith('test_omitted'))).toBe(false)
      expect(s.get('test_latency_seconds_count')).toBe(sum((id) => id))
      expect(s.get('test_latency_seconds_bucket{le="+Inf"}')).toBe(sum((id) => id))
      expect(s.get('conclave_agent_workers_missing')).toBe(0)
      expect(s.get('conclave_agent_workers_asked')).toBe(4)
      // Byte for byte what prom-client renders for the same parts, plus conclave's gauges.
      const reference = await AggregatorRegistry.aggregate(parts).metrics()
      expect(text.startsWith(`${reference}\n# HELP conclave_agent_workers_missing`)).toBe(true)
    }
    expect(fromPrimary).toContain('# HELP test_requests_total Requests "served"\\nby route')

    // An OpenMetrics registry gets OpenMetrics text (rendered by prom-client), gauges before EOF.
    const openRegistry = new Registry<typeof Registry.OPENMETRICS_CONTENT_TYPE>()
    openRegistry.setContentType(Registry.OPENMETRICS_CONTENT_TYPE)
    const open = await collectClusterMetrics(openRegistry)
    expect(open.contentType).toBe(Registry.OPENMETRICS_CONTENT_TYPE)
    expect(open.text).toMatch(/\nconclave_agent_workers_missing 0\n[^]*# EOF\n$/)
    expect(open.text).not.toMatch(/^# conclave:/m)
    expect(samples(open.text.replace('# EOF', '')).get('test_started_max')).toBe(Math.max(...ids))
  })

  it('leaves a silent worker out, counts it, and answers within the timeout', async () => {
    const hung = workers[3]!
    hung.worker.process.kill('SIGSTOP')
    try {
      const result = await collectClusterMetrics(null, { timeoutMs: 800 })
      expect(result.missing.map((m) => m.workerId)).toEqual([hung.worker.id])
      const s = samples(result.text)
      expect(s.get('conclave_agent_workers_missing')).toBe(1)
      const live = workers.filter((w) => w !== hung).map((w) => w.worker.id)
      expect(s.get('test_requests_total{route="/b\\\\x",code="500"}')).toBe(
        live.reduce((a, b) => a + b, 0),
      )
      expect(result.text).toMatch(
        new RegExp(`# conclave: worker ${hung.worker.id} \\(pid \\d+\\) left out: .*within 800 ms`),
      )
      const health = await clusterHealth({ timeoutMs: 800 })
      expect(health.ok).toBe(false)
      expect(health.workers.find((w) => w.workerId === hung.worker.id)?.status).toBe('silent')
      expect(health.workers.filter((w) => w.status === 'healthy')).toHaveLength(3)
    } finally {
      hung.worker.process.kill('SIGCONT')
    }
  })

  it('reports an unhealthy worker and stays healthy otherwise', async () => {
    expect((await clusterHealth()).ok).toBe(true)
    const sick = await forkWorker({ TEST_UNHEALTHY: '1' })
    workers.push(sick)
    const health = await clusterHealth()
    expect(health.ok).toBe(false)
    const entry = health.workers.find((w) => w.workerId === sick.worker.id)
    expect(entry).toMatchObject({
      ok: false,
      status: 'unhealthy',
      detail: { reason: 'told to be unhealthy' },
    })
    expect(health.workers.filter((w) => w.ok)).toHaveLength(4)
  })
})
