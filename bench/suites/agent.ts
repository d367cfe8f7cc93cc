/**
 * The process agent against its peers, each in the same run on the same 4-worker cluster:
 * - `runInPrimary` vs `@midwayjs/process-agent`'s `@RunInPrimary()`: sequential call latency
 *   from one worker, and calls per second from 3 workers with 16 calls in flight each.
 *   Midway's decorator needs its IoC container only to find the service instance in the
 *   primary; here its own `Configuration.onReady()` runs with a stub `app` whose
 *   `createAnonymousContext().requestContext.getAsync()` returns the instance at once (its
 *   cheapest case). Everything else (saveModule, the unix-socket HTTP server in the primary,
 *   the `request` client in workers, JSON bodies) is Midway's own code, unmodified.
 * - `clusterMetrics` vs prom-client's `AggregatorRegistry.clusterMetrics()`: one scrape of 4
 *   workers with the same registries (default metrics + labelled counters and histograms).
 *
 * This file is also the cluster app the benchmark forks (role chosen by env), so the suite
 * stays one file: the runner process never becomes a cluster primary itself.
 */
import { fork } from 'node:child_process'
import cluster, { type Worker } from 'node:cluster'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import type { BenchRow, BenchSuite } from '../stats.js'
import { summarize } from '../stats.js'

const here = fileURLToPath(import.meta.url)
const ROLE_ENV = 'CONCLAVE_BENCH_AGENT'
const WORKERS = 4
const CALLERS = 3
const IN_FLIGHT = 16

interface Plan {
  mode: 'worker' | 'primary'
  calls: number
  throughputMs: number
  scrapes: number
  peers: boolean
}

interface Results {
  rows: BenchRow[]
}

// ---- the suite (runs in the bench runner) ----------------------------------------------------

const suite: BenchSuite = {
  name: 'agent',
  async run({ quick, log }) {
    const base = {
      calls: quick ? 300 : 3_000,
      throughputMs: quick ? 500 : 3_000,
      scrapes: quick ? 30 : 300,
    }
    const rows: BenchRow[] = []
    // Designated process = the primary: the same topology as Midway's (worker → primary).
    log('conclave, designated primary ...')
    rows.push(...(await runChild({ ...base, mode: 'primary', peers: false })).rows)
    log('conclave, designated worker (default), midway, prom-client ...')
    rows.push(...(await runChild({ ...base, mode: 'worker', peers: true })).rows)
    log("merge + render of 4 workers' metrics, in process ...")
    rows.push(...(await mergeRows(quick ? 200 : 2_000)))
    const order = (r: BenchRow) => (r.subject.startsWith('conclave') ? 0 : 1)
    const metrics = [...new Set(rows.map((r) => r.metric))]
    return metrics.flatMap((m) =>
      rows.filter((r) => r.metric === m).sort((a, b) => order(a) - order(b)),
    )
  },
}
export default suite

/**
 * The part of a scrape where the two differ by construction, measured without IPC or
 * scheduling noise: merging 4 workers' `getMetricsAsJSON()` output and rendering the text.
 */
async function mergeRows(rounds: number): Promise<BenchRow[]> {
  const prom = await import('prom-client')
  const { aggregate, renderPrometheus } = await import('../../src/agent/metrics.js')
  const parts: unknown[][] = []
  for (let w = 0; w < WORKERS; w++) {
    const registry = new prom.Registry()
    fillRegistry(prom, registry)
    parts.push(JSON.parse(JSON.stringify(await registry.getMetricsAsJSON())) as unknown[])
  }
  const ours = () => renderPrometheus(aggregate(parts as never))
  const theirs = () => prom.AggregatorRegistry.aggregate(parts).metrics()
  if (ours() !== (await theirs())) throw new Error('conclave and prom-client render different text')
  const a: number[] = []
  const b: number[] = []
  for (let i = 0; i < rounds + 100; i++) {
    let t = performance.now()
    ours()
    if (i >= 100) a.push(performance.now() - t)
    t = performance.now()
    await theirs()
    if (i >= 100) b.push(performance.now() - t)
  }
  const metric = `merge + render ${WORKERS} workers' metrics (in process, identical output)`
  return [
    summarize(metric, 'conclave aggregate + renderPrometheus', a),
    summarize(metric, 'prom-client AggregatorRegistry.aggregate().metrics()', b),
  ]
}

/** Default metrics plus labelled counters and histograms: what a worker of a web app has. */
function fillRegistry(
  prom: typeof import('prom-client'),
  registry: import('prom-client').Registry,
) {
  prom.collectDefaultMetrics({ register: registry })
  for (let c = 0; c < 5; c++) {
    const counter = new prom.Counter({
      name: `bench_counter_${c}_total`,
      help: `counter ${c}`,
      labelNames: ['route', 'status'],
      registers: [registry],
    })
    for (let l = 0; l < 20; l++) counter.inc({ route: `/r${l}`, status: 200 + l }, l + 1)
  }
  for (let h = 0; h < 2; h++) {
    const histogram = new prom.Histogram({
      name: `bench_latency_${h}_seconds`,
      help: `histogram ${h}`,
      labelNames: ['route'],
      registers: [registry],
    })
    for (let l = 0; l < 10; l++) histogram.observe({ route: `/r${l}` }, l / 10)
  }
}

function runChild(plan: Plan): Promise<Results> {
  return new Promise((resolve, reject) => {
    const child = fork(here, [], {
      execArgv: ['--import', 'tsx'],
      env: { ...process.env, [ROLE_ENV]: JSON.stringify(plan) },
    })
    let results: Results | undefined
    child.on('message', (m: unknown) => {
      const r = (m as { benchResults?: Results }).benchResults
      if (r) results = r
    })
    child.once('error', reject)
    child.once('exit', (code) =>
      results ? resolve(results) : reject(new Error(`agent bench child exited with ${code}`)),
    )
  })
}

// ---- the cluster app (runs in the forked primary and its workers) ----------------------------

const plan = process.env[ROLE_ENV] ? (JSON.parse(process.env[ROLE_ENV]) as Plan) : undefined
if (plan) await app(plan)

async function app(plan: Plan): Promise<void> {
  const { runInPrimary, startAgent, shareMetrics, clusterMetrics } =
    await import('../../src/agent/index.js')
  const prom = await import('prom-client')
  const require = createRequire(import.meta.url)
  const midway = require('@midwayjs/process-agent') as {
    RunInPrimary(): (target: object, key: string, descriptor: PropertyDescriptor) => void
    Configuration: new () => {
      app: unknown
      onReady(): Promise<void>
      onStop(): Promise<void>
    }
  }

  // The same handler for both: a small object answer, as a cache or lookup would give.
  const getUser = (id: number) => ({ id, name: `user-${id}`, roles: ['reader', 'writer'] })
  const agent = startAgent({ designated: plan.mode, timeoutMs: 30_000 })
  const conclaveGetUser = runInPrimary('bench/getUser', getUser)

  class MidwayService {
    async getUser(id: number) {
      return getUser(id)
    }
  }
  if (plan.peers) {
    const descriptor = Object.getOwnPropertyDescriptor(MidwayService.prototype, 'getUser')!
    midway.RunInPrimary()(MidwayService.prototype, 'getUser', descriptor)
    Object.defineProperty(MidwayService.prototype, 'getUser', descriptor)
  }
  const midwayService = new MidwayService()

  // Metrics: default metrics plus labelled counters and histograms, in every worker.
  const registry = new prom.Registry()
  if (cluster.isWorker) {
    fillRegistry(prom, registry)
    shareMetrics(registry)
    prom.AggregatorRegistry.setRegistries(registry)
    // prom-client's workers answer only once an AggregatorRegistry exists in them.
    new prom.AggregatorRegistry()
  }

  if (cluster.isWorker) {
    const callers = {
      conclave: (id: number) => conclaveGetUser(id),
      midway: (id: number) => midwayService.getUser(id),
      metrics: () => clusterMetrics(registry),
    } as const
    process.on('message', (m: unknown) => {
      const cmd = (
        m as { bench?: { op: string; subject: keyof typeof callers; n: number; ms: number } }
      ).bench
      if (!cmd) return
      void (async () => {
        const call = callers[cmd.subject]
        if (cmd.op === 'designated') return agent.isDesignated
        if (cmd.op === 'latency') {
          for (let i = 0; i < Math.min(200, cmd.n); i++) await call(i)
          const samples: number[] = []
          for (let i = 0; i < cmd.n; i++) {
            const t = performance.now()
            await call(i)
            samples.push(performance.now() - t)
          }
          return samples
        }
        // throughput: IN_FLIGHT loops for cmd.ms
        let count = 0
        const end = performance.now() + cmd.ms
        await Promise.all(
          Array.from({ length: IN_FLIGHT }, async (_, k) => {
            while (performance.now() < end) {
              await call(k)
              count++
            }
          }),
        )
        return count
      })().then(
        (result) => process.send!({ benchReply: result }),
        (error: Error) => process.send!({ benchReply: { error: error.stack } }),
      )
    })
    await agent.ready()
    process.send!({ benchReady: true })
    return
  }

  // primary
  cluster.setupPrimary({ exec: here, execArgv: ['--import', 'tsx'] })
  const midwayConfig = new midway.Configuration()
  if (plan.peers) {
    midwayConfig.app = {
      createAnonymousContext: () => ({
        requestContext: { getAsync: async () => midwayService },
      }),
    }
    await midwayConfig.onReady()
  }
  const aggregator = new prom.AggregatorRegistry()
  const workers: Worker[] = []
  for (let i = 0; i < WORKERS; i++) {
    const worker = cluster.fork()
    await new Promise<void>((resolve) => {
      const on = (m: unknown) => {
        if ((m as { benchReady?: boolean }).benchReady) {
          worker.off('message', on)
          resolve()
        }
      }
      worker.on('message', on)
    })
    workers.push(worker)
  }
  const ask = <T>(worker: Worker, bench: object) =>
    new Promise<T>((resolve, reject) => {
      const on = (m: unknown) => {
        if (!m || typeof m !== 'object' || !('benchReply' in m)) return
        worker.off('message', on)
        const reply = (m as { benchReply: T | { error: string } }).benchReply
        if (reply && typeof reply === 'object' && 'error' in reply) reject(new Error(reply.error))
        else resolve(reply)
      }
      worker.on('message', on)
      worker.send({ bench })
    })

  // Wait for the designated process, then pick callers that are not it.
  await agent.call('bench/getUser', [0])
  const designated = await Promise.all(workers.map((w) => ask<boolean>(w, { op: 'designated' })))
  const callers = workers.filter((_, i) => !designated[i]).slice(0, CALLERS)
  const rows: BenchRow[] = []
  const subjects: [keyof { conclave: 1; midway: 1 }, string][] = [
    [
      'conclave',
      plan.mode === 'primary'
        ? 'conclave runInPrimary (designated: primary)'
        : 'conclave runInPrimary (designated: worker, default; relayed by the primary)',
    ],
    ...(plan.peers
      ? [['midway', 'midway @RunInPrimary (unix socket HTTP)'] as ['midway', string]]
      : []),
  ]
  for (const [subject, label] of subjects) {
    const samples = await ask<number[]>(callers[0]!, { op: 'latency', subject, n: plan.calls })
    rows.push(summarize('call latency, 1 worker, sequential', label, samples))
    const counts = await Promise.all(
      callers.map((w) => ask<number>(w, { op: 'throughput', subject, ms: plan.throughputMs })),
    )
    const total = counts.reduce((a, b) => a + b, 0)
    rows.push({
      metric: `calls per second, ${CALLERS} workers x ${IN_FLIGHT} in flight`,
      subject: label,
      unit: 'calls/s',
      value: total / (plan.throughputMs / 1000),
      samples: total,
    })
  }

  if (plan.peers) {
    // Interleaved, so both see the same machine load; 10 rounds of warm-up first.
    const ours: number[] = []
    const theirs: number[] = []
    for (let i = 0; i < plan.scrapes + 10; i++) {
      let t = performance.now()
      await clusterMetrics(null)
      if (i >= 10) ours.push(performance.now() - t)
      t = performance.now()
      await aggregator.clusterMetrics()
      if (i >= 10) theirs.push(performance.now() - t)
    }
    const sizes = [(await clusterMetrics(null)).length, (await aggregator.clusterMetrics()).length]
    const metric = `cluster metrics scrape, ${WORKERS} workers`
    rows.push(
      summarize(
        metric,
        'conclave clusterMetrics (from the primary)',
        ours,
        'ms',
        `${sizes[0]} bytes incl. conclave gauges`,
      ),
      summarize(
        metric,
        'conclave clusterMetrics (from a worker: worker → primary → all → primary → worker)',
        await ask<number[]>(callers[0]!, { op: 'latency', subject: 'metrics', n: plan.scrapes }),
      ),
      summarize(
        metric,
        'prom-client AggregatorRegistry.clusterMetrics() (primary only)',
        theirs,
        'ms',
        `${sizes[1]} bytes`,
      ),
    )
  }

  process.send!({ benchResults: { rows } })
  if (plan.peers) await midwayConfig.onStop()
  for (const worker of workers) worker.process.kill()
  await agent.close()
  process.exit(0)
}
