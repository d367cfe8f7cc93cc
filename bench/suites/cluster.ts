// The cluster backend across real forked workers: every call crosses node:cluster IPC.
import cluster, { type Worker } from 'node:cluster'
import { fileURLToPath } from 'node:url'
import { serveCluster } from '../../src/backends/cluster/index.js'
import { type BenchRow, type BenchSuite, summarize } from '../stats.js'

interface Message {
  bench: string
  samples?: number[]
  token?: number
}

function fork(): Promise<Worker> {
  const worker = cluster.fork()
  return new Promise((resolve) => {
    worker.once('message', () => resolve(worker))
  })
}

function next(worker: Worker, kind: string): Promise<Message> {
  return new Promise((resolve) => {
    const on = (m: Message) => {
      if (m.bench === kind) {
        worker.off('message', on)
        resolve(m)
      }
    }
    worker.on('message', on)
  })
}

function exit(worker: Worker, signal: NodeJS.Signals): Promise<void> {
  if (worker.isDead()) return Promise.resolve()
  const done = new Promise<void>((resolve) => worker.once('exit', () => resolve()))
  worker.process.kill(signal)
  return done
}

const suite: BenchSuite = {
  name: 'cluster',
  async run({ quick, log }) {
    cluster.setupPrimary({
      exec: fileURLToPath(new URL('./_cluster-worker.ts', import.meta.url)),
      execArgv: ['--import', 'tsx'],
    })
    serveCluster()
    const rows: BenchRow[] = []
    const rounds = quick ? 50 : 500

    const solo = await fork()
    solo.send({ bench: 'uncontended', rounds, resource: 'bench/cluster-uncontended' })
    rows.push(
      summarize('uncontended acquire', 'conclave/cluster', (await next(solo, 'samples')).samples!),
    )
    await exit(solo, 'SIGTERM')

    // Handoff and crash, measured in the primary: from the command to the successor's report.
    const handoff: number[] = []
    const crash: number[] = []
    const leaseMs = 5_000
    const pairs = quick ? 5 : 20
    for (let i = 0; i < pairs; i++) {
      for (const kind of ['handoff', 'crash'] as const) {
        const resource = `bench/cluster-${kind}-${i}`
        const [a, b] = await Promise.all([fork(), fork()])
        a.send({ bench: 'campaign', resource, leaseMs })
        await next(a, 'elected')
        b.send({ bench: 'campaign', resource, leaseMs })
        await new Promise((r) => setTimeout(r, 50)) // b is waiting now
        const elected = next(b, 'elected')
        const t0 = performance.now()
        if (kind === 'handoff') a.send({ bench: 'resign' })
        else a.process.kill('SIGKILL')
        await elected
        ;(kind === 'handoff' ? handoff : crash).push(performance.now() - t0)
        await Promise.all([exit(a, 'SIGKILL'), exit(b, 'SIGKILL')])
      }
    }
    rows.push(summarize('graceful handoff', 'conclave/cluster', handoff))
    rows.push({
      ...summarize('crash failover', 'conclave/cluster', crash),
      note: `lease ${leaseMs} ms: the hub drops a dead worker's grants at once`,
    })
    rows.push({
      ...summarize(
        'crash failover (x lease)',
        'conclave/cluster',
        crash.map((ms) => ms / leaseMs),
        'x lease',
      ),
    })
    log(`cluster: ${rounds} uncontended rounds, ${pairs} handoffs and crashes`)
    return rows
  },
}
export default suite
