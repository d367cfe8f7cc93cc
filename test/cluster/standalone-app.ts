// Real processes for test/cluster/standalone.test.ts. One JSON line on stdout per event; Node
// prints process warnings on stderr, where the test looks for them.
//   standalone-app.ts elect RESOURCE MS            one process electing on clusterBackend() (the README's example)
//   standalone-app.ts cluster-app WORKERS          a primary that forks workers and campaigns too, until a worker takes over
//   standalone-app.ts campaign-then-fork MS        a primary that wins a term, then forks a worker
//   standalone-app.ts try [OPTIONS_JSON]           calls clusterBackend(options) and reports
//   standalone-app.ts try-in-worker                a primary forking one worker (with this env) that calls clusterBackend()
import cluster from 'node:cluster'
import { fileURLToPath } from 'node:url'
import { clusterBackend } from '../../src/backends/cluster/index.js'
import { Election } from '../../src/election.js'

const [mode, ...args] = process.argv.slice(2)
const say = (event: object) => console.log(JSON.stringify({ pid: process.pid, ...event }))
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Resolves once `ok()` holds, or after `ms` (the test then sees what is missing). */
async function waitFor(ok: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms
  while (!ok() && Date.now() < end) await sleep(20)
}

/** Campaigns on `resource` until `ms` have passed (or `until` resolves); reports each term. */
async function elect(resource: string, until: number | Promise<void>, report = say): Promise<void> {
  const election = new Election(clusterBackend(), resource, { leaseMs: 2_000 })
  election.on('error', (error) => report({ error: error.message }))
  const running = election.run(async (term) => {
    report({ elected: term.token, id: election.id })
    await new Promise((resolve) => term.signal.addEventListener('abort', resolve, { once: true }))
  })
  report({ campaigning: true })
  await (typeof until === 'number' ? sleep(until) : until)
  await election.close()
  await running
}

/** Workers run this file in `workerMode`, with this process's environment. */
function setupWorkers(workerMode: string): void {
  cluster.setupPrimary({
    exec: fileURLToPath(import.meta.url),
    execArgv: ['--import', 'tsx'],
    args: [workerMode],
  })
}

function tryBackend(options: object): object {
  try {
    const backend = clusterBackend(options)
    void backend.close()
    return { ok: true }
  } catch (error) {
    return { error: { code: (error as { code?: string }).code, message: (error as Error).message } }
  }
}

async function main(): Promise<void> {
  switch (mode) {
    case 'elect':
      await elect(args[0]!, Number(args[1]))
      return
    case 'cluster-app': {
      const backend = clusterBackend() // the hub, before forking, as the README says
      setupWorkers('cluster-worker')
      const workers = Array.from({ length: Number(args[0]) }, () => cluster.fork())
      let campaigning = 0
      let workerTerms = 0
      for (const worker of workers) {
        worker.on('message', (m: object) => {
          if ('campaigning' in m) campaigning++
          if ('elected' in m) workerTerms++
          if ('elected' in m || 'error' in m) say({ worker: worker.id, ...m })
        })
      }
      // The primary takes part too: it holds until every worker campaigns (each starts under
      // tsx, slow on a loaded machine), then steps down, and a worker takes over.
      await elect(
        'app/leader',
        waitFor(() => campaigning === workers.length, 20_000),
      )
      await waitFor(() => workerTerms > 0, 20_000)
      for (const worker of workers) worker.kill()
      await backend.close()
      return
    }
    case 'cluster-worker':
      await elect('app/leader', 60_000, (event) => process.send!(event))
      return
    case 'campaign-then-fork': {
      const election = new Election(clusterBackend(), 'app/first', { leaseMs: 2_000 })
      const term = await election.campaign()
      say({ elected: term.token })
      setupWorkers('idle-worker')
      const worker = cluster.fork()
      await sleep(Number(args[0]))
      worker.kill()
      await election.close()
      return
    }
    case 'idle-worker':
      process.on('disconnect', () => process.exit(0))
      setInterval(() => {}, 1_000)
      return
    case 'try':
      say(tryBackend(args[0] ? (JSON.parse(args[0]) as object) : {}))
      return
    case 'try-in-worker': {
      setupWorkers('try-worker')
      const worker = cluster.fork()
      const result = await new Promise<object>((resolve) => worker.once('message', resolve))
      say(result)
      worker.kill()
      return
    }
    case 'try-worker':
      process.send!(tryBackend(args[0] ? (JSON.parse(args[0]) as object) : {}))
      process.on('disconnect', () => process.exit(0))
      return
    default:
      throw new Error(`unknown mode ${mode}`)
  }
}

await main()
