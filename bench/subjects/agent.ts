/**
 * The agent subjects, in the primary of a 4-worker cluster app (bench/subjects/agent-host.ts):
 * conclave's agent (designated process: the primary, or a worker as by default),
 * `@midwayjs/process-agent`'s `@RunInPrimary()` and prom-client's `AggregatorRegistry`; and
 * conclave's agent over `local` (every process's agent on localBackend, the hub routing). Every
 * worker has the same registries (default metrics plus labelled counters and histograms).
 */
import type { Registry } from 'prom-client'
import type { AgentSubject, InWorkers, WorkerLoop } from '../scenarios.js'

/** The subjects by role, with their row labels. */
export const AGENT_SUBJECTS = {
  primary: 'conclave agent (designated: primary)',
  worker: 'conclave agent (designated: worker, the default)',
  midway: '@midwayjs/process-agent @RunInPrimary',
  prom: 'prom-client AggregatorRegistry',
  local: 'conclave agent over local (no node:cluster routing)',
} as const

/** The workers of every app. */
export const WORKERS = 4

/** What a worker runs on request: an operation under one scenario loop. */
export type WorkerOp = 'call-conclave' | 'call-midway' | 'scrape-conclave'

/** What the app's primary offers the subjects. */
export interface AgentApp {
  /** Workers that are not the designated process. */
  readonly callers: number
  inWorker(op: WorkerOp, caller: number, loop: WorkerLoop): Promise<number[] | number>
  /** This primary's prom-client AggregatorRegistry. */
  readonly aggregator: { clusterMetrics(): Promise<string> }
  /** conclave's cluster scrape, from the primary. */
  clusterMetrics(): Promise<string>
}

type PromClient = typeof import('prom-client')

/** Default metrics plus labelled counters and histograms: what a worker of a web app has. */
export function fillRegistry(prom: PromClient, registry: Registry): void {
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

/** What 4 such workers' getMetricsAsJSON() send, as it arrives (through JSON). */
async function workerParts(prom: PromClient): Promise<unknown[][]> {
  const parts: unknown[][] = []
  for (let w = 0; w < WORKERS; w++) {
    const registry = new prom.Registry()
    fillRegistry(prom, registry)
    parts.push(JSON.parse(JSON.stringify(await registry.getMetricsAsJSON())) as unknown[])
  }
  return parts
}

/** conclave's in-process merge of `parts`. */
async function conclaveMerge(parts: unknown[][]): Promise<() => string> {
  const { aggregate, renderPrometheus } = await import('../../src/agent/metrics.js')
  return () => renderPrometheus(aggregate(parts as never))
}

const inWorkers = (app: AgentApp, op: WorkerOp): InWorkers => ({
  workers: app.callers,
  run: (caller, loop) => app.inWorker(op, caller, loop),
})

const METRICS_AS_PRIMARY =
  'metrics do not depend on the designated process: see the designated: primary row'

/** The subject `name` in `app`. */
export async function agentSubject(name: string, app: AgentApp): Promise<AgentSubject> {
  const prom = await import('prom-client')
  switch (name) {
    case AGENT_SUBJECTS.primary:
      return {
        name,
        call: inWorkers(app, 'call-conclave'),
        scrape: () => app.clusterMetrics(),
        scrapeFromWorker: inWorkers(app, 'scrape-conclave'),
        prepareMerge: async () => conclaveMerge(await workerParts(prom)),
      }
    case AGENT_SUBJECTS.worker:
      return {
        name,
        call: inWorkers(app, 'call-conclave'),
        cannot: {
          scrape: METRICS_AS_PRIMARY,
          'scrape-worker': METRICS_AS_PRIMARY,
          merge: METRICS_AS_PRIMARY,
        },
      }
    case AGENT_SUBJECTS.local:
      // The same app, but every process's agent is on localBackend: the hub's process routes.
      return {
        name,
        call: inWorkers(app, 'call-conclave'),
        cannot: {
          scrape: METRICS_AS_PRIMARY,
          'scrape-worker': METRICS_AS_PRIMARY,
          merge: METRICS_AS_PRIMARY,
        },
      }
    case AGENT_SUBJECTS.midway:
      return {
        name,
        call: inWorkers(app, 'call-midway'),
        cannot: {
          scrape: 'no cluster metrics',
          'scrape-worker': 'no cluster metrics',
          merge: 'no cluster metrics',
        },
      }
    case AGENT_SUBJECTS.prom:
      return {
        name,
        scrape: () => app.aggregator.clusterMetrics(),
        async prepareMerge() {
          const parts = await workerParts(prom)
          const render = () => prom.AggregatorRegistry.aggregate(parts).metrics()
          // The comparison holds only while both give the same text for the same input.
          if ((await render()) !== (await conclaveMerge(parts))())
            throw new Error('conclave and prom-client render different text')
          return render
        },
        cannot: {
          'call-latency': 'no calls between processes',
          'call-throughput': 'no calls between processes',
          'scrape-worker': 'clusterMetrics() works in the primary only',
        },
      }
    default:
      throw new Error(`no agent subject ${name}`)
  }
}
