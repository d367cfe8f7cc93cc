/**
 * `conclave demo`: forks workers on the cluster backend (no server), shows who leads, kills
 * the leader, closes one gracefully, measures each failover, then does it again with
 * `--tickets 2`. Ends with a summary and exits non-zero if more than `tickets` ever held.
 */
import cluster, { type Worker } from 'node:cluster'
import { clusterBackend, serveCluster } from '../backends/cluster/index.js'
import { Election } from '../election.js'

/** The parsed flags of `conclave demo`. */
export interface DemoOptions {
  workers: number
  leaseMs: number
  /** Ticket counts to show, one phase each. */
  phases: number[]
  out: (line: string) => void
}

type WorkerReport =
  | { demo: 'elected'; token: number; id: string }
  | { demo: 'revoked'; token: number; reason: string }

interface PhaseResult {
  tickets: number
  terms: number
  tokens: number[]
  tokensIncreasing: boolean
  crashFailoverMs: number | undefined
  gracefulHandoffMs: number | undefined
  maxHolders: number
}

const WORKER_FLAG = '--conclave-demo-worker'

/** In a demo worker: campaign forever, report each term to the primary, close on request. */
export async function demoWorker(
  resource: string,
  tickets: number,
  leaseMs: number,
): Promise<void> {
  const election = new Election(clusterBackend(), resource, {
    tickets,
    leaseMs,
    id: `worker-${cluster.worker!.id}`,
  })
  election.on('error', () => {}) // the primary shows what matters; keep campaigning
  election.on('revoked', (term, reason) =>
    process.send!({ demo: 'revoked', token: term.token, reason }),
  )
  process.on('message', (message: { demo?: string }) => {
    if (message.demo === 'close') void election.close().then(() => process.disconnect())
  })
  await election.run(async (term) => {
    process.send!({ demo: 'elected', token: term.token, id: election.id })
    await new Promise((resolve) => term.signal.addEventListener('abort', resolve, { once: true }))
  })
}

/** True in a worker the demo forked (the CLI then runs the worker half). */
export function isDemoWorker(): boolean {
  return cluster.isWorker && process.argv.includes(WORKER_FLAG)
}

/** Runs the demo; resolves true when never more than `tickets` held at once. */
export async function runDemo(options: DemoOptions): Promise<boolean> {
  const { out } = options
  const started = performance.now()
  const stamp = () => `${((performance.now() - started) / 1000).toFixed(2).padStart(6)}s`
  const say = (line: string) => out(`${stamp()}  ${line}`)
  out(
    `conclave demo: ${options.workers} workers on the cluster backend (node:cluster IPC, no server), lease ${options.leaseMs} ms`,
  )

  // Our listeners go first so a dead worker leaves our holder count before the hub
  // releases its grant and someone else reports a win.
  const active = new Map<number, number>() // worker id -> token
  let maxHolders = 0
  let onEvent: (() => void) | undefined
  const gone = (worker: Worker) => active.delete(worker.id)
  cluster.on('disconnect', gone)
  cluster.on('exit', gone)
  serveCluster()

  const results: PhaseResult[] = []
  for (const tickets of options.phases) {
    const resource = `demo/tickets-${tickets}`
    out('')
    out(`== tickets: ${tickets} (${resource}) ==`)
    cluster.setupPrimary({
      exec: process.argv[1]!,
      args: [WORKER_FLAG, resource, String(tickets), String(options.leaseMs)],
      serialization: 'json',
    })
    const tokens: number[] = []
    let terms = 0
    // A term that starts after another ended must carry a larger token (arrival order across
    // workers' channels says nothing about terms that started together).
    let maxEnded = 0
    let tokenOrderOk = true
    const workers: Worker[] = []
    for (let i = 0; i < options.workers; i++) {
      const worker = cluster.fork()
      workers.push(worker)
      worker.on('message', (message: WorkerReport) => {
        if (message.demo === 'elected') {
          if (message.token <= maxEnded || tokens.includes(message.token)) tokenOrderOk = false
          active.set(worker.id, message.token)
          tokens.push(message.token)
          terms++
          maxHolders = Math.max(maxHolders, active.size)
          const overfull =
            active.size > tickets ? `  !! ${active.size} holders > tickets ${tickets}` : ''
          say(
            `★ worker ${worker.id} (pid ${worker.process.pid}) elected, token ${message.token}; holders now: ${[...active.keys()].map((id) => `w${id}`).join(' ')}${overfull}`,
          )
          onEvent?.()
        } else if (message.demo === 'revoked') {
          maxEnded = Math.max(maxEnded, message.token)
          active.delete(worker.id)
          say(`  worker ${worker.id} stepped down (${message.reason}), token ${message.token}`)
        }
      })
    }
    say(`forked ${options.workers} workers: ${workers.map((w) => `w${w.id}`).join(' ')}`)
    const waitForHolders = (n: number) =>
      new Promise<void>((resolve) => {
        const check = () => {
          if (active.size >= n) {
            onEvent = undefined
            resolve()
          }
        }
        onEvent = check
        check()
      })
    /** Resolves with the ms until a worker other than `except` is elected. */
    const nextWin = (except: number) =>
      new Promise<number>((resolve) => {
        const from = performance.now()
        const before = new Set([...active.keys()].filter((id) => id !== except))
        onEvent = () => {
          if ([...active.keys()].some((id) => !before.has(id) && id !== except)) {
            onEvent = undefined
            resolve(performance.now() - from)
          }
        }
      })
    const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
    // Resolves undefined after ms without keeping the process alive once the race is won.
    const giveUp = (ms: number) =>
      new Promise<undefined>((resolve) => setTimeout(resolve, ms, undefined).unref())

    await waitForHolders(tickets)
    await pause(1_000)

    const victim = [...active.keys()][0]!
    const victimWorker = workers.find((w) => w.id === victim)!
    say(`✖ SIGKILL worker ${victim} (pid ${victimWorker.process.pid}), a holder`)
    const failover = nextWin(victim)
    maxEnded = Math.max(maxEnded, active.get(victim)!)
    victimWorker.process.kill('SIGKILL')
    const crashFailoverMs = await Promise.race([failover, giveUp(options.leaseMs * 3)])
    say(
      crashFailoverMs === undefined
        ? 'no failover seen!'
        : `  failover after the crash: ${crashFailoverMs.toFixed(1)} ms (the hub drops a dead worker's grants at once)`,
    )
    await pause(1_000)

    const leaver = [...active.keys()][0]!
    say(`↩ worker ${leaver} closes gracefully (drain, release)`)
    const handoff = nextWin(leaver)
    workers.find((w) => w.id === leaver)!.send({ demo: 'close' })
    const gracefulHandoffMs = await Promise.race([handoff, giveUp(options.leaseMs * 3)])
    say(
      gracefulHandoffMs === undefined
        ? 'no handoff seen!'
        : `  handoff after the graceful close: ${gracefulHandoffMs.toFixed(1)} ms`,
    )
    await pause(500)

    onEvent = undefined
    await Promise.all(
      workers.map(
        (w) =>
          new Promise<void>((resolve) => {
            if (w.isDead()) return resolve()
            w.once('exit', () => resolve())
            w.process.kill('SIGTERM')
          }),
      ),
    )
    active.clear()
    results.push({
      tickets,
      terms,
      tokens,
      tokensIncreasing: tokenOrderOk,
      crashFailoverMs,
      gracefulHandoffMs,
      maxHolders,
    })
    maxHolders = 0
  }

  out('')
  out('== summary ==')
  out(
    '| tickets | terms | tokens | new tokens above every ended term | crash failover | graceful handoff | most holders at once |',
  )
  out('|---|---|---|---|---|---|---|')
  for (const r of results) {
    const ms = (v: number | undefined) => (v === undefined ? 'none seen' : `${v.toFixed(1)} ms`)
    out(
      `| ${r.tickets} | ${r.terms} | ${r.tokens.join(' ')} | ${r.tokensIncreasing ? 'yes' : 'NO'} | ${ms(r.crashFailoverMs)} | ${ms(r.gracefulHandoffMs)} | ${r.maxHolders} |`,
    )
  }
  const safe = results.every((r) => r.maxHolders <= r.tickets && r.tokensIncreasing)
  const complete = results.every(
    (r) => r.crashFailoverMs !== undefined && r.gracefulHandoffMs !== undefined,
  )
  out('')
  out(
    safe
      ? 'never more holders than tickets: yes'
      : 'MORE HOLDERS THAN TICKETS, OR A TOKEN WENT BACKWARDS',
  )
  out(`done in ${((performance.now() - started) / 1000).toFixed(1)} s`)
  cluster.off('disconnect', gone)
  cluster.off('exit', gone)
  return safe && complete
}
