/**
 * Runs one chaos run: starts the backend's server, P candidate processes (each networked one
 * behind its own fault proxy), the fenced register they write to (the referee), injects faults
 * on a seeded schedule, closes everything and returns the records for the checker.
 */
import { type ChildProcess, fork } from 'node:child_process'
import cluster from 'node:cluster'
import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { MemoryFence } from '../src/fence/memory.js'
import { CANDIDATE_FILE, candidateArgs } from '../testkit/candidate.js'
import { startProxy, type FaultProxy } from '../testkit/proxy.js'
import { CHAOS_BACKENDS, CHAOS_BACKENDS_FILE, chaosBackend, type ChaosServer } from './backends.js'
import { Prng } from './prng.js'
import {
  type ChaosRecords,
  type FaultKind,
  type FaultRecord,
  type HarnessMessage,
  isChaosMessage,
  now,
  type ProcRecord,
  type RunConfig,
  type TermRecord,
} from './records.js'

export interface ChaosOptions {
  backend: string
  seed: number
  /** Whole run, start to close. */
  seconds: number
  procs: number
  tickets: number
  leaseMs: number
  /** Default leaseMs / 10. */
  workMs?: number
  /** Default: every fault that applies to the backend. */
  faults?: FaultKind[]
  /** Progress lines. */
  log?: (line: string) => void
}

interface Candidate {
  id: string
  record: ProcRecord
  child: ChildProcess
  send(message: HarnessMessage): void
  proxy?: FaultProxy
  alive: boolean
  exited: Promise<void>
  /** The term it holds now, as it told us. */
  open: TermRecord | undefined
  /** Resolves the next stall report. */
  onStall?: () => void
}

/** A timeout for a race: never keeps the process alive on its own. */
const idle = (ms: number) => sleep(ms, undefined, { ref: false })

/** Every child this process started and has not seen exit: killed if the harness dies. */
const liveChildren = new Set<ChildProcess>()
let exitHook = false
function killChildrenOnExit(): void {
  if (exitHook) return
  exitHook = true
  process.on('exit', () => {
    for (const child of liveChildren) child.kill('SIGKILL')
  })
}

function shuffle<T>(prng: Prng, items: readonly T[]): T[] {
  const out = [...items]
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(prng.next() * (i + 1))
    ;[out[i], out[j]] = [out[j]!, out[i]!]
  }
  return out
}

/** The faults a run injects: the requested ones that apply to the backend. */
export function applicableFaults(backend: string, requested?: FaultKind[]): FaultKind[] {
  const entry = chaosBackend(backend)
  if (!entry) throw new Error(`unknown chaos backend ${backend}`)
  return requested ? requested.filter((k) => entry.faults.includes(k)) : [...entry.faults]
}

export async function runChaos(options: ChaosOptions): Promise<ChaosRecords> {
  const entry = chaosBackend(options.backend)
  if (!entry) {
    throw new Error(
      `unknown chaos backend "${options.backend}"; known: ${Object.keys(CHAOS_BACKENDS).join(', ')}`,
    )
  }
  const log = options.log ?? (() => {})
  const { leaseMs, tickets } = options
  const config: RunConfig = {
    backend: options.backend,
    seed: options.seed,
    seconds: options.seconds,
    procs: options.procs,
    tickets,
    leaseMs,
    workMs: options.workMs ?? Math.max(5, Math.round(leaseMs / 10)),
    faults: applicableFaults(options.backend, options.faults),
    resource: `chaos/${options.backend}-${options.seed}-${randomBytes(3).toString('hex')}`,
  }
  const prng = new Prng(options.seed)
  const records: ChaosRecords = {
    config,
    startedAt: now(),
    faultsEndedAt: 0,
    closingAt: 0,
    endedAt: 0,
    procs: [],
    terms: [],
    writes: [],
    faults: [],
    blind: [],
    heldAtClose: [],
    leftBehind: [],
    candidateErrors: {},
    harnessErrors: [],
  }
  const fence = new MemoryFence<string>()
  let seq = 0
  const candidates: Candidate[] = []
  let spawned = 0
  killChildrenOnExit()

  const server: ChaosServer = await entry.start({ leaseMs: options.leaseMs })
  const proxies: FaultProxy[] = []

  const onMessage = (c: Candidate, message: unknown): void => {
    if (!isChaosMessage(message)) return
    const m = message as Record<string, unknown> & { type: string }
    switch (m.type) {
      case 'ready':
        c.record.readyAt = m.at as number
        break
      case 'elected': {
        const term: TermRecord = { proc: c.id, token: m.token as number, start: m.at as number }
        records.terms.push(term)
        c.open = term
        break
      }
      case 'revoked': {
        const term = c.open?.token === m.token ? c.open : undefined
        if (term) {
          term.end = m.at as number
          term.deadline = m.deadline as number
          term.reason = m.reason as string
          c.open = undefined
        } else {
          records.harnessErrors.push(`${c.id}: revoked token ${String(m.token)} it never won`)
        }
        break
      }
      case 'write': {
        const token = m.token as number
        const result = fence.tryWrite('register', token, c.id)
        records.writes.push({
          seq: ++seq,
          proc: c.id,
          token,
          checkedAt: m.checkedAt as number,
          at: now(),
          accepted: result.accepted,
          highest: result.highest,
        })
        break
      }
      case 'stall':
        records.blind.push({
          proc: c.id,
          kind: 'stall',
          start: m.start as number,
          end: m.end as number,
        })
        c.onStall?.()
        break
      case 'error': {
        const text = String(m.message)
        records.candidateErrors[text] = (records.candidateErrors[text] ?? 0) + 1
        break
      }
    }
  }

  const spawn = async (): Promise<Candidate> => {
    const id = `c${++spawned}`
    let proxy: FaultProxy | undefined
    let url: string
    if (server.target) {
      proxy = await startProxy({ targetHost: server.target.host, targetPort: server.target.port })
      proxies.push(proxy)
      url = server.url(proxy.host, proxy.port)
    } else {
      url = server.url('', 0)
    }
    const args = candidateArgs(
      url,
      config.resource,
      { id, leaseMs, tickets, drainMs: leaseMs },
      {
        workMs: config.workMs,
        // The entry's own connect (a self-test backend is no URL scheme).
        connect: { module: CHAOS_BACKENDS_FILE, name: options.backend },
      },
    )
    let child: ChildProcess
    let send: (message: HarnessMessage) => void
    let listen: (fn: (message: unknown) => void) => void
    if (entry.mode === 'cluster') {
      cluster.setupPrimary({
        exec: CANDIDATE_FILE,
        args,
        execArgv: ['--import', 'tsx'],
        serialization: 'json',
        silent: false,
      })
      const worker = cluster.fork()
      child = worker.process
      send = (message) => {
        if (worker.isConnected()) worker.send(message, undefined, () => {})
      }
      listen = (fn) => worker.on('message', fn)
    } else {
      child = fork(CANDIDATE_FILE, args, {
        execArgv: ['--import', 'tsx'],
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      })
      send = (message) => {
        if (child.connected) child.send(message, undefined, undefined, () => {})
      }
      listen = (fn) => child.on('message', fn)
    }
    child.on('error', () => {})
    liveChildren.add(child)
    const record: ProcRecord = { id, pid: child.pid ?? -1, spawnedAt: now() }
    records.procs.push(record)
    const candidate: Candidate = {
      id,
      record,
      child,
      send,
      ...(proxy ? { proxy } : {}),
      alive: true,
      open: undefined,
      exited: new Promise((resolve) => {
        child.once('exit', (code, signal) => {
          liveChildren.delete(child)
          candidate.alive = false
          record.exitedAt = now()
          record.exit = { code, signal }
          resolve()
        })
      }),
    }
    listen((message) => onMessage(candidate, message))
    candidates.push(candidate)
    return candidate
  }

  const holders = () => candidates.filter((c) => c.alive && c.open !== undefined)

  const inject = async (kind: FaultKind): Promise<void> => {
    const leases = prng.between(0.5, 3)
    const variant = prng.pick(['reset', 'blackhole', 'delay'] as const)
    if (kind === 'restart') {
      if (!server.restart) return
      const start = now()
      await server.restart(Math.round(leases * leaseMs))
      records.faults.push({ kind, variant: 'kill -9', start, end: now(), leases })
      log(`fault restart (down ${leases.toFixed(1)} leases)`)
      return
    }
    // Faults aimed at a holder: wait (up to a lease) for one.
    const until = now() + leaseMs
    let targets = holders()
    while (targets.length === 0 && now() < until) {
      await sleep(20)
      targets = holders()
    }
    const target =
      targets.length > 0 ? prng.pick(targets.sort((a, b) => (a.id < b.id ? -1 : 1))) : undefined
    if (!target) {
      records.harnessErrors.push(
        `no holder to ${kind} at +${(now() - records.startedAt).toFixed(0)} ms`,
      )
      return
    }
    const fault: FaultRecord = { kind, target: target.id, start: now(), end: 0, leases }
    switch (kind) {
      case 'kill':
        target.record.killedAt = now()
        fault.start = target.record.killedAt
        target.child.kill('SIGKILL')
        await Promise.race([target.exited, idle(5_000)])
        fault.end = now()
        await spawn()
        break
      case 'pause':
        target.child.kill('SIGSTOP')
        await sleep(leases * leaseMs)
        target.child.kill('SIGCONT')
        fault.end = now()
        records.blind.push({ proc: target.id, kind: 'pause', start: fault.start, end: fault.end })
        break
      case 'stall': {
        const reported = new Promise<void>((resolve) => (target.onStall = resolve))
        target.send({ kit: 1, type: 'stall', ms: Math.round(leases * leaseMs) })
        await Promise.race([reported, target.exited, idle(leases * leaseMs + 10_000)])
        target.onStall = undefined
        fault.end = now()
        break
      }
      case 'partition': {
        const proxy = target.proxy
        if (!proxy) return
        if (server.isolate) {
          // The server's own partition: its master cut off from all but this holder.
          const others = proxies.filter((p) => p !== proxy)
          if (!(await server.isolate(others, Math.round(leases * leaseMs)))) return
          fault.variant = 'master isolated but from the holder'
          fault.end = now()
          break
        }
        fault.variant = variant
        if (variant === 'delay') proxy.delay(Math.round(leaseMs * prng.between(0.2, 0.6)))
        else proxy.cut({ mode: variant })
        await sleep(leases * leaseMs)
        if (variant === 'delay') proxy.delay(0)
        else proxy.restore()
        fault.end = now()
        break
      }
    }
    records.faults.push(fault)
    log(
      `fault ${kind}${fault.variant ? `/${fault.variant}` : ''} on ${target.id} (${leases.toFixed(1)} leases)`,
    )
  }

  try {
    for (let i = 0; i < options.procs; i++) await spawn()
    // Warm up: the first term.
    const warm = now() + 30_000
    while (holders().length === 0 && now() < warm) await sleep(20)
    if (holders().length === 0) records.harnessErrors.push('no candidate won within 30 s')
    log(`candidates up, first leader ${holders()[0]?.id ?? 'none'}`)
    // The run's seconds count from the first leader: server start and warm-up come on top.
    const endAt = now() + options.seconds * 1000
    // The last fault must be over (a fault lasts up to 3 leases, a restart a bit more) two
    // leases before the close, so every grant of a killed candidate has expired by then.
    const faultsEnd = endAt - 5.5 * leaseMs
    let bag: FaultKind[] = []
    while (config.faults.length > 0) {
      const gap = leaseMs * prng.between(1, 2.5)
      if (now() + gap >= faultsEnd) break
      await sleep(gap)
      // Kinds come from a seeded shuffled bag: every kind once before any repeats.
      if (bag.length === 0) bag = shuffle(prng, config.faults)
      await inject(bag.pop()!)
      // Keep P candidates alive whatever happened (a candidate may die of a fault too).
      while (candidates.filter((c) => c.alive).length < options.procs) await spawn()
    }
    records.faultsEndedAt = now()
    // A slow last fault (a server restart on a loaded machine) still gets two quiet leases.
    await sleep(Math.max(endAt - now(), 2 * leaseMs))
  } finally {
    records.closingAt = now()
    log('closing')
    for (const c of candidates) if (c.alive) c.child.kill('SIGCONT')
    await Promise.all(
      candidates
        .filter((c) => c.alive)
        .map(async (c) => {
          c.send({ kit: 1, type: 'close' })
          await Promise.race([c.exited, idle(leaseMs + 10_000)])
          if (c.alive) {
            records.harnessErrors.push(
              `${c.id} did not close within ${leaseMs + 10_000} ms; killed`,
            )
            c.child.kill('SIGKILL')
            await c.exited
          }
        }),
    )
    try {
      const listHolders = async () =>
        (await server.holders(config.resource)).map((h) => ({
          candidate: h.candidate,
          token: h.token,
        }))
      records.heldAtClose = await listHolders()
      // A release that raced a fault (the client still reconnecting) leaves the grant to
      // expire: only a grant that outlives its lease is left behind.
      if (records.heldAtClose.length > 0) await sleep(leaseMs + 1_000)
      records.leftBehind = records.heldAtClose.length > 0 ? await listHolders() : []
    } catch (error) {
      records.harnessErrors.push(
        `could not list holders after the run: ${(error as Error).message}`,
      )
    }
    await Promise.all(proxies.map((p) => p.close()))
    await server.stop().catch((error: unknown) => {
      records.harnessErrors.push(`stopping the server: ${(error as Error).message}`)
    })
    records.endedAt = now()
  }
  return records
}
