/**
 * The cluster app of the agent suite, started by the runner (which never becomes a cluster
 * primary itself) for a group of agent subjects: this file is the primary and its 4 workers.
 *
 * Midway's `@RunInPrimary()` needs its IoC container only to find the service instance in the
 * primary; here its own `Configuration.onReady()` runs with a stub `app` whose
 * `createAnonymousContext().requestContext.getAsync()` returns the instance at once (its cheapest
 * case). Everything else (saveModule, the unix-socket HTTP server in the primary, the `request`
 * client in workers, JSON bodies) is Midway's own code, unmodified.
 */
import cluster, { type Worker } from 'node:cluster'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { agentScenarios, runLoop, runScenarios, type WorkerLoop } from '../scenarios.js'
import { type BenchRow } from '../stats.js'
import { hostOptions, hostPlan, hostReply } from '../suite.js'
import { AGENT_SUBJECTS, agentSubject, fillRegistry, WORKERS, type WorkerOp } from './agent.js'

const plan = hostPlan()
if (!plan) throw new Error('agent-host.ts is started by the bench runner (bench/suite.ts)')
const designated = plan.subjects.includes(AGENT_SUBJECTS.worker) ? 'worker' : 'primary'
const midwayToo = plan.subjects.includes(AGENT_SUBJECTS.midway)
// Every process's agent on localBackend (one app per run: named by the primary's pid).
const overLocal = plan.subjects.includes(AGENT_SUBJECTS.local)
const { localBackend } = await import('../../src/backends/local/index.js')
const localApp = overLocal
  ? localBackend({ name: `bench-agent-${cluster.isPrimary ? process.pid : process.ppid}` })
  : undefined

const { runInPrimary, startAgent, shareMetrics, clusterMetrics } =
  await import('../../src/agent/index.js')
const prom = await import('prom-client')
const require = createRequire(import.meta.url)
const midway = require('@midwayjs/process-agent') as {
  RunInPrimary(): (target: object, key: string, descriptor: PropertyDescriptor) => void
  Configuration: new () => { app: unknown; onReady(): Promise<void>; onStop(): Promise<void> }
}

// The same handler for both: a small object answer, as a cache or lookup would give.
const getUser = (id: number) => ({ id, name: `user-${id}`, roles: ['reader', 'writer'] })
const agent = startAgent(
  localApp ? { backend: localApp, timeoutMs: 30_000 } : { designated, timeoutMs: 30_000 },
)
const conclaveGetUser = runInPrimary('bench/getUser', getUser)

class MidwayService {
  async getUser(id: number) {
    return getUser(id)
  }
}
if (midwayToo) {
  const descriptor = Object.getOwnPropertyDescriptor(MidwayService.prototype, 'getUser')!
  midway.RunInPrimary()(MidwayService.prototype, 'getUser', descriptor)
  Object.defineProperty(MidwayService.prototype, 'getUser', descriptor)
}
const midwayService = new MidwayService()

interface Command {
  benchOp: WorkerOp | 'designated'
  loop?: WorkerLoop
}

if (cluster.isWorker) {
  const registry = new prom.Registry()
  fillRegistry(prom, registry)
  shareMetrics(registry)
  prom.AggregatorRegistry.setRegistries(registry)
  // prom-client's workers answer only once an AggregatorRegistry exists in them.
  new prom.AggregatorRegistry()
  const ops: Record<WorkerOp, (i: number) => Promise<unknown>> = {
    'call-conclave': (i) => conclaveGetUser(i),
    'call-midway': (i) => midwayService.getUser(i),
    'scrape-conclave': () => clusterMetrics(registry),
  }
  process.on('message', (m: Command) => {
    if (!m || typeof m !== 'object' || !('benchOp' in m)) return
    void (async () =>
      m.benchOp === 'designated' ? agent.isDesignated : runLoop(ops[m.benchOp], m.loop!))().then(
      (result) => process.send!({ benchReply: result }),
      (error: Error) => process.send!({ benchReply: { error: error.stack } }),
    )
  })
  await agent.ready()
  process.send!({ benchReady: true })
} else {
  cluster.setupPrimary({ exec: fileURLToPath(import.meta.url), execArgv: ['--import', 'tsx'] })
  const midwayConfig = new midway.Configuration()
  if (midwayToo) {
    midwayConfig.app = {
      createAnonymousContext: () => ({ requestContext: { getAsync: async () => midwayService } }),
    }
    await midwayConfig.onReady()
  }
  const aggregator = new prom.AggregatorRegistry()
  const workers: Worker[] = []
  for (let i = 0; i < WORKERS; i++) {
    const worker = cluster.fork()
    await new Promise<void>((resolve) => {
      const on = (m: { benchReady?: boolean }) => {
        if (!m?.benchReady) return
        worker.off('message', on)
        resolve()
      }
      worker.on('message', on)
    })
    workers.push(worker)
  }
  const ask = <T>(worker: Worker, command: Command) =>
    new Promise<T>((resolve, reject) => {
      const on = (m: unknown) => {
        if (!m || typeof m !== 'object' || !('benchReply' in m)) return
        worker.off('message', on)
        const reply = (m as { benchReply: T | { error: string } }).benchReply
        if (reply && typeof reply === 'object' && 'error' in reply) reject(new Error(reply.error))
        else resolve(reply)
      }
      worker.on('message', on)
      worker.send(command)
    })
  // Wait for the designated process, then call from workers that are not it.
  await agent.call('bench/getUser', [0])
  const flags = await Promise.all(workers.map((w) => ask<boolean>(w, { benchOp: 'designated' })))
  const callers = workers.filter((_, i) => !flags[i])
  const app = {
    callers: callers.length,
    inWorker: (op: WorkerOp, caller: number, loop: WorkerLoop) =>
      ask<number[] | number>(callers[caller]!, { benchOp: op, loop }),
    aggregator,
    clusterMetrics: () => clusterMetrics(null),
  }
  const options = hostOptions(plan)
  const scenarios = agentScenarios.filter((s) => plan.scenarios.includes(s.id))
  const rows: BenchRow[] = []
  for (const name of plan.subjects)
    rows.push(...(await runScenarios(await agentSubject(name, app), scenarios, options)))
  await hostReply(rows)
  if (midwayToo) await midwayConfig.onStop()
  for (const worker of workers) worker.process.kill()
  await agent.close()
  await localApp?.close()
  process.exit(0)
}
