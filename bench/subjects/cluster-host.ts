/**
 * The process tree of the cluster suite, started by the runner (which never becomes a cluster
 * primary itself): this file's primary serves the hub and forks one measuring worker, which
 * runs the scenarios on conclave/cluster (this file again, as a worker) and sends its rows up;
 * holder workers (bench/holder.ts) are forked on the measuring worker's request.
 */
import cluster, { type Worker } from 'node:cluster'
import { fileURLToPath } from 'node:url'
import { serveCluster } from '../../src/backends/cluster/index.js'
import { HOLDER_PROGRAM, type HolderMessage } from '../probes.js'
import { electionScenarios, runScenarios } from '../scenarios.js'
import { hostOptions, hostPlan, hostReply, isHostMessage } from '../suite.js'
import { clusterSubject, type HolderReport, type HolderRequest } from './cluster.js'

const plan = hostPlan()
if (!plan) throw new Error('cluster-host.ts is started by the bench runner (bench/suite.ts)')
const tsx = ['--import', 'tsx']

if (cluster.isPrimary) {
  serveCluster()
  const workers = new Set<Worker>()
  const fork = (exec: string, args: string[]) => {
    cluster.setupPrimary({ exec, args, execArgv: tsx })
    const worker = cluster.fork()
    workers.add(worker)
    worker.once('exit', () => workers.delete(worker))
    return worker
  }
  const measurer = fork(fileURLToPath(import.meta.url), [])
  const tell = (report: HolderReport) => {
    if (measurer.isConnected()) measurer.send(report)
  }
  measurer.on('message', (m: unknown) => {
    if (isHostMessage(m)) {
      const done = typeof m === 'object' && m !== null && 'benchRows' in m
      process.send!(m, () => {
        if (!done) return
        for (const w of workers) w.process.kill('SIGKILL')
        process.exit(0)
      })
      return
    }
    const request = m as HolderRequest
    if (request?.benchHolder !== 'spawn') return
    const holder = fork(HOLDER_PROGRAM, ['cluster', JSON.stringify(request.config)])
    const pid = holder.process.pid!
    holder.on('message', (message: HolderMessage) => {
      if (message && typeof message === 'object' && 'type' in message)
        tell({ benchHolder: 'report', id: request.id, pid, message })
    })
    holder.once('exit', () => tell({ benchHolder: 'exited', id: request.id }))
  })
  measurer.once('exit', (code) => {
    console.error(`cluster bench: the measuring worker exited (${code})`)
    process.exit(1)
  })
} else {
  // Each clusterBackend() handle listens on `process`; the idle-waiter scenario opens 11.
  process.setMaxListeners(50)
  const scenarios = electionScenarios.filter((s) => plan.scenarios.includes(s.id))
  const rows = await runScenarios(clusterSubject(), scenarios, hostOptions(plan))
  await hostReply(rows)
}
