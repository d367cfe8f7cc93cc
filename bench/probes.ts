/**
 * What scenarios and subjects measure with: a clock every process agrees on, CPU read from
 * /proc, unique names, bounded concurrency, and the child-process holders of the crash scenarios.
 */
import { type ChildProcess, fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

/** Resolves after `ms`. */
export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/**
 * Epoch milliseconds with sub-millisecond precision: comparable across the processes of one
 * machine (a killed holder's "lost" report is compared with the waiter's grant).
 */
export const now = () => performance.timeOrigin + performance.now()

/** A resource name no earlier run or subject used (servers are fresh, names still must not meet). */
export const uniqueKey = (label: string) => `bench/${label}/${randomBytes(4).toString('hex')}`

/** Runs `fn(0..count-1)`, at most `limit` at a time (thousands at once queue past their leases). */
export async function pool(
  count: number,
  limit: number,
  fn: (index: number) => Promise<unknown>,
): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: Math.min(limit, count) }, async () => {
      while (next < count) await fn(next++)
    }),
  )
}

/** Rejects with `what` when `promise` has not settled within `ms`. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/** This process's CPU time (user + system) so far, in ms. */
export function ownCpuMs(): number {
  const usage = process.cpuUsage()
  return (usage.user + usage.system) / 1_000
}

// Linux reports process times in clock ticks; USER_HZ is 100 on every mainstream kernel build.
const TICK_MS = 10

function statFields(pid: number): string[] | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name (field 2) may hold spaces: fields are counted after its closing paren.
    return text.slice(text.lastIndexOf(')') + 2).split(' ')
  } catch {
    return undefined
  }
}

/**
 * CPU time (user + system, ms) of process `pid` and, with `children`, of its live child
 * processes (PostgreSQL's backends): the same probe for every server, read from /proc (Linux).
 */
export function processCpuMs(pid: number, children = false): number {
  const cpu = (fields: string[] | undefined) =>
    fields ? (Number(fields[11]) + Number(fields[12])) * TICK_MS : 0
  let total = cpu(statFields(pid))
  if (!children) return total
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    const fields = statFields(Number(entry))
    if (fields && Number(fields[1]) === pid) total += cpu(fields)
  }
  return total
}

/** How a holder process is started: the subject module that holds, and what it needs. */
export interface HolderConfig {
  /** The subject, by name (each subject module knows its own). */
  subject: string
  resource: string
  leaseMs: number
  /** The holder's candidate id where the subject has one, so probes can tell its grant apart. */
  id: string
  /** Connection details, set by the subject (a proxy port replaces the server's for cuts). */
  [key: string]: string | number | boolean
}

/**
 * What a subject module exports for bench/holder.ts: take `config.resource` in this process,
 * keep it renewed as the subject does by default, call `onLost` if the hold ends.
 */
export type HoldInChild = (config: HolderConfig, onLost: () => void) => Promise<void>

/** A candidate process that holds a resource until it is killed. */
export interface HolderProcess {
  readonly pid: number
  /** Sends SIGKILL at once; resolves when the process is gone. */
  kill(): Promise<void>
  /** When (see `now`) the holder itself saw its hold end, if it has. */
  lostAt(): number | undefined
}

/** bench/holder.ts, the one holder program every subject kind shares. */
export const HOLDER_PROGRAM = fileURLToPath(new URL('./holder.ts', import.meta.url))

/** Messages a holder sends its parent. */
export type HolderMessage =
  { type: 'held' } | { type: 'lost'; at: number } | { type: 'failed'; error: string }

/**
 * Starts bench/holder.ts for `module` (a file in bench/subjects/) and resolves once it holds.
 * Started with `node --import tsx`, as any TypeScript candidate of this repository.
 */
export async function spawnHolder(module: string, config: HolderConfig): Promise<HolderProcess> {
  const child = fork(HOLDER_PROGRAM, [module, JSON.stringify(config)], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  })
  return watchHolder(child, child.pid!)
}

/** Follows a holder's messages and exit (a forked child, or a cluster worker's process). */
export function watchHolder(
  child: Pick<ChildProcess, 'on' | 'once' | 'kill' | 'exitCode' | 'signalCode'>,
  pid: number,
): Promise<HolderProcess> {
  let lost: number | undefined
  let gone = false
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      gone = true
      resolve()
    }),
  )
  child.on('message', (m: HolderMessage) => {
    if (m?.type === 'lost') lost = m.at
  })
  const holder: HolderProcess = {
    pid,
    async kill() {
      if (!gone) child.kill('SIGKILL')
      await exited
    },
    lostAt: () => lost,
  }
  return within(
    new Promise<HolderProcess>((resolve, reject) => {
      child.on('message', (m: HolderMessage) => {
        if (m?.type === 'held') resolve(holder)
        if (m?.type === 'failed') reject(new Error(`holder failed: ${m.error}`))
      })
      void exited.then(() => reject(new Error('holder exited before it held')))
    }),
    60_000,
    'holder process',
  ).catch(async (error: unknown) => {
    await holder.kill()
    throw error
  })
}

// ---- waiter processes of the many-waiters scenario ---------------------------------------------

/** How a waiter process is started: its candidates, and the connection details of its subject. */
export interface WaitersConfig {
  /** The subject, by name. */
  subject: string
  resource: string
  leaseMs: number
  /** Candidates (Elections) in this process, on one backend. */
  count: number
  /** Campaigns started at once; the next starts as one is answered. */
  startInFlight: number
  [key: string]: string | number | boolean
}

/** What the parent asks of a waiter process. */
export type WaiterCommand = { cmd: 'resign' } | { cmd: 'cpu' } | { cmd: 'close' }

/** Messages a waiter process sends its parent; times are `now()` there. */
export type WaiterMessage =
  | { type: 'ready' }
  | { type: 'progress'; answered: number; errors: number }
  | { type: 'elected'; at: number }
  | { type: 'resigned'; at: number }
  | { type: 'cpu'; ms: number }
  | { type: 'closed'; errors: number; firstError?: string }
  | { type: 'failed'; error: string }

/** A process of waiting candidates (bench/waiters.ts). */
export interface WaiterProcess {
  readonly pid: number
  /** Resolves once every candidate there was answered (waits or holds). */
  readonly ready: Promise<void>
  /** Calls `listener` with the time (see `now`) of each election there. */
  onElected(listener: (at: number) => void): void
  /** How many of its candidates were answered so far, and the errors they emitted (reported). */
  progress(): { answered: number; errors: number }
  /** How many of its candidates hold now (as it reported). */
  holding(): number
  /** Resigns a term held there; resolves with when resign() was called there. */
  resign(): Promise<number>
  /** Its CPU time (user + system) so far, in ms. */
  cpuMs(): Promise<number>
  /** Closes its candidates and waits for it to exit; resolves with the errors they emitted. */
  close(): Promise<{ errors: number; firstError?: string }>
}

/** bench/waiters.ts, the one waiter program every conclave backend shares. */
export const WAITERS_PROGRAM = fileURLToPath(new URL('./waiters.ts', import.meta.url))

/**
 * Starts bench/waiters.ts for `module` (a file in bench/subjects/ exporting `waitersBackend`);
 * resolves once it runs (see `ready` for its candidates).
 */
export function spawnWaiters(module: string, config: WaitersConfig): WaiterProcess {
  const child = fork(WAITERS_PROGRAM, [module, JSON.stringify(config)], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  })
  let gone = false
  let failure: Error | undefined
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      gone = true
      resolve()
    }),
  )
  const elected: ((at: number) => void)[] = []
  const waiting: { type: WaiterMessage['type']; resolve: (m: WaiterMessage) => void }[] = []
  let holding = 0
  let progress = { answered: 0, errors: 0 }
  let markReady!: () => void
  let failReady!: (error: Error) => void
  const ready = new Promise<void>(
    (resolve, reject) => ((markReady = resolve), (failReady = reject)),
  )
  ready.catch(() => {})
  child.on('message', (m: WaiterMessage) => {
    if (m.type === 'ready') markReady()
    if (m.type === 'progress') progress = { answered: m.answered, errors: m.errors }
    if (m.type === 'elected') {
      holding++
      for (const listener of elected) listener(m.at)
    }
    if (m.type === 'resigned') holding--
    if (m.type === 'failed') {
      failure = new Error(`waiter process failed: ${m.error}`)
      failReady(failure)
    }
    const i = waiting.findIndex((w) => w.type === m.type)
    if (i >= 0) waiting.splice(i, 1)[0]!.resolve(m)
  })
  void exited.then(() => failReady(new Error('waiter process exited before it was ready')))
  const ask = <T extends WaiterMessage['type']>(command: WaiterCommand, type: T) => {
    if (failure) return Promise.reject(failure)
    if (gone) return Promise.reject(new Error('waiter process is gone'))
    const answer = new Promise<WaiterMessage>((resolve) => waiting.push({ type, resolve }))
    child.send(command)
    return within(answer, 60_000, `waiter process (${command.cmd})`) as Promise<
      Extract<WaiterMessage, { type: T }>
    >
  }
  return {
    pid: child.pid!,
    ready,
    onElected: (listener) => void elected.push(listener),
    progress: () => progress,
    holding: () => holding,
    resign: async () => (await ask({ cmd: 'resign' }, 'resigned')).at,
    cpuMs: async () => (await ask({ cmd: 'cpu' }, 'cpu')).ms,
    async close() {
      if (gone) return { errors: 0 }
      try {
        const { errors, firstError } = await ask({ cmd: 'close' }, 'closed')
        return { errors, ...(firstError ? { firstError } : {}) }
      } catch {
        return { errors: 0 }
      } finally {
        if (!gone) child.kill('SIGKILL')
        await exited
      }
    },
  }
}
