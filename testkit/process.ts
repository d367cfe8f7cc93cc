// Shared machinery of the private test servers: finding binaries, spawning with output to a log
// file, waiting until ready, signalling a process (and, for postgres, its children), and making
// sure nothing outlives the test process. No vitest imports: benchmark and chaos scripts use it.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import {
  accessSync,
  closeSync,
  constants,
  fstatSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs'
import { rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { delimiter, dirname, join } from 'node:path'

export const DEFAULT_START_TIMEOUT_MS = 20_000
export const DEFAULT_STOP_TIMEOUT_MS = 10_000

export interface RestartOptions {
  /**
   * true: stop the server cleanly (SIGTERM, SIGINT for postgres) before starting it again.
   * false (default): SIGKILL it, as a crash would.
   */
  graceful?: boolean
}

/** What every private server handle offers. */
export interface ServerHandle extends AsyncDisposable {
  /** pid of the current server process (the postmaster for postgres); changes on restart. */
  readonly pid: number
  /** true from start until stop()/kill() or an exit of the process. */
  readonly running: boolean
  /** The temp folder owned by this server (removed by stop()). */
  readonly dir: string
  /** stdout+stderr of every process this handle started, appended. */
  readonly logFile: string
  /** SIGTERM (postgres: SIGINT), SIGKILL after a bound, remove the temp folder. Idempotent. */
  stop(): Promise<void>
  /** SIGKILL (postgres: the postmaster and all its children), wait until gone. Keeps the folder. */
  kill(): Promise<void>
  /** SIGSTOP: the server holds its sockets but answers nothing. */
  pause(): Promise<void>
  /** SIGCONT after pause(). */
  resume(): Promise<void>
  /** Kill (or stop, with graceful) if running, then start again on the same port(s); waits ready. */
  restart(options?: RestartOptions): Promise<void>
  /** Last lines of the log file. */
  logTail(lines?: number): string
}

// ---------------------------------------------------------------------------------------------
// binaries

export function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK)
    return statSync(path).isFile()
  } catch {
    return false
  }
}

export function missingBinaryError(name: string, debianPackage: string): Error {
  return new Error(
    `${name} not found: run scripts/ensure-servers.sh (installs Debian package ${debianPackage})`,
  )
}

/**
 * Absolute path of an executable: the environment variable `envVar` if set, else the first hit on
 * PATH, else the first hit in `extraDirs`. Throws the "run scripts/ensure-servers.sh" error.
 */
export function findBinary(
  name: string,
  debianPackage: string,
  options: { envVar?: string; extraDirs?: string[] } = {},
): string {
  const fromEnv = options.envVar ? process.env[options.envVar] : undefined
  if (fromEnv) {
    if (isExecutable(fromEnv)) return fromEnv
    throw new Error(`${options.envVar}=${fromEnv} is not an executable file`)
  }
  const dirs = [...(process.env.PATH ?? '').split(delimiter), ...(options.extraDirs ?? [])]
  for (const dir of dirs) {
    if (!dir) continue
    const candidate = join(dir, name)
    if (isExecutable(candidate)) return candidate
  }
  throw missingBinaryError(name, debianPackage)
}

// ---------------------------------------------------------------------------------------------
// temp folders and logs

/** A fresh temp folder `conclave-<kind>-XXXXXX` (removed at process exit if still there). */
export function makeTempDir(kind: string, base = tmpdir()): string {
  const dir = mkdtempSync(join(base, `conclave-${kind}-`))
  liveDirs.add(dir)
  installExitHooks()
  return dir
}

export async function removeDir(dir: string): Promise<void> {
  liveDirs.delete(dir)
  await rm(dir, { recursive: true, force: true, maxRetries: 3 }).catch(() => undefined)
}

/** The last `lines` lines of a file, from byte offset `from` on. */
export function tailFile(path: string, lines = 30, from = 0): string {
  try {
    const text = readFileSync(path).subarray(from).toString('utf8')
    return text
      .split('\n')
      .slice(-lines - 1)
      .join('\n')
      .trimEnd()
  } catch {
    return '(no log)'
  }
}

// ---------------------------------------------------------------------------------------------
// processes

export interface ExitInfo {
  code: number | null
  signal: NodeJS.Signals | null
}

export interface LaunchSpec {
  command: string
  args: string[]
  logFile: string
  env?: NodeJS.ProcessEnv
  cwd?: string
  uid?: number
  gid?: number
  /** Signal and wait for the whole process tree (postgres forks backends). */
  tree?: boolean
}

/** A spawned server process whose output goes straight to a log file (no pipe to fill up). */
export class ManagedProcess {
  readonly pid: number
  readonly command: string
  readonly tree: boolean
  readonly exited: Promise<ExitInfo>
  /** Byte offset in the log file where this process's output starts. */
  logStart = 0
  exitInfo: ExitInfo | undefined
  /** Descendants we stopped with SIGSTOP, continued again on resume(). */
  private stoppedPids: number[] = []

  private readonly child: ChildProcess
  private waiters = 0

  private constructor(
    child: ChildProcess,
    command: string,
    tree: boolean,
    exited: Promise<ExitInfo>,
  ) {
    this.child = child
    this.pid = child.pid!
    this.command = command
    this.tree = tree
    this.exited = exited.then((info) => {
      this.exitInfo = info
      liveProcesses.delete(this)
      return info
    })
  }

  static async launch(spec: LaunchSpec): Promise<ManagedProcess> {
    const fd = openSync(spec.logFile, 'a')
    try {
      const header = `--- ${new Date().toISOString()} ${spec.command} ${spec.args.join(' ')}\n`
      writeSync(fd, header)
      const logStart = fstatSync(fd).size
      const child = spawn(spec.command, spec.args, {
        stdio: ['ignore', fd, fd],
        env: spec.env ?? process.env,
        cwd: spec.cwd,
        uid: spec.uid,
        gid: spec.gid,
        detached: false,
      })
      const exited = new Promise<ExitInfo>((resolve) => {
        child.once('exit', (code, signal) => resolve({ code, signal }))
      })
      await new Promise<void>((resolve, reject) => {
        child.once('error', reject)
        child.once('spawn', () => {
          child.removeListener('error', reject)
          // An 'error' after spawn (e.g. a failed kill) must not become an uncaught exception.
          child.on('error', () => undefined)
          resolve()
        })
      })
      // A running server must not keep the event loop (a test worker, a script) alive; we ref the
      // handle again only while awaiting its exit.
      child.unref()
      const proc = new ManagedProcess(child, spec.command, spec.tree ?? false, exited)
      proc.logStart = logStart
      liveProcesses.add(proc)
      installExitHooks()
      return proc
    } finally {
      closeSync(fd)
    }
  }

  get running(): boolean {
    return this.exitInfo === undefined
  }

  /** The pid plus, for tree processes, every live descendant. */
  pids(): number[] {
    return this.tree ? [this.pid, ...descendants(this.pid)] : [this.pid]
  }

  signal(signal: NodeJS.Signals, pids = this.pids()): void {
    for (const pid of pids) {
      try {
        process.kill(pid, signal)
      } catch {
        // already gone
      }
    }
  }

  pause(): void {
    if (!this.running) throw new Error(`${this.command} (pid ${this.pid}) is not running`)
    // The parent first, so it cannot fork a child we would miss.
    this.signal('SIGSTOP', [this.pid])
    const children = this.tree ? descendants(this.pid) : []
    this.signal('SIGSTOP', children)
    this.stoppedPids = [this.pid, ...children]
  }

  resume(): void {
    // Once exited, its pid may belong to someone else: signal nothing.
    if (!this.running) return
    const pids = new Set([...this.stoppedPids, ...this.pids()])
    this.stoppedPids = []
    // Children first, the parent last: mirror image of pause().
    this.signal('SIGCONT', [...pids].reverse())
  }

  /** Waits for exit; resolves false if it did not happen within timeoutMs. */
  async waitExit(timeoutMs = Infinity): Promise<boolean> {
    if (!this.running) return true
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<false>((resolve) => {
      if (Number.isFinite(timeoutMs)) timer = setTimeout(() => resolve(false), timeoutMs)
    })
    // Keep the event loop alive while someone awaits the exit (the handle is unref'd otherwise).
    if (this.waiters++ === 0) this.child.ref()
    try {
      return await Promise.race([this.exited.then(() => true as const), timedOut])
    } finally {
      clearTimeout(timer)
      if (--this.waiters === 0) this.child.unref()
    }
  }

  /** SIGKILL the process (and its tree), wait until all of it is gone. */
  async kill(): Promise<void> {
    // Once exited, its pid may belong to someone else: signal nothing.
    if (!this.running) return
    const pids = [...new Set([...this.stoppedPids, ...this.pids()])]
    this.signal('SIGKILL', pids)
    await this.waitExit()
    // Descendants reparented to init die on their own time: wait for them too (bounded).
    await waitGone(pids.slice(1), 5_000)
  }

  /** `signal`, then SIGKILL after timeoutMs; continues a paused process first. */
  async terminate(signal: NodeJS.Signals, timeoutMs = DEFAULT_STOP_TIMEOUT_MS): Promise<void> {
    if (!this.running) return
    const pids = this.pids()
    this.signal(signal, [this.pid])
    this.resume()
    if (!(await this.waitExit(timeoutMs))) {
      await this.kill()
      return
    }
    await waitGone(pids.slice(1), 5_000)
  }
}

/** Live descendants of pid, found by walking /proc (Linux). */
export function descendants(pid: number): number[] {
  const parentOf = new Map<number, number>()
  let entries: string[]
  try {
    entries = readdirSync('/proc')
  } catch {
    return []
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      parentOf.set(Number(entry), Number(fields[1]))
    } catch {
      // exited meanwhile
    }
  }
  const result: number[] = []
  const frontier = [pid]
  while (frontier.length > 0) {
    const parent = frontier.pop()!
    for (const [child, ppid] of parentOf) {
      if (ppid === parent) {
        result.push(child)
        frontier.push(child)
      }
    }
  }
  return result
}

/** true while pid runs (a zombie, waiting for its parent to reap it, counts as gone). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  try {
    // A zombie still answers kill(0): count it as gone.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    return false
  }
}

async function waitGone(pids: number[], timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs
  let rest = pids.filter(processAlive)
  while (rest.length > 0 && Date.now() < until) {
    await sleep(20)
    rest = rest.filter(processAlive)
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

// ---------------------------------------------------------------------------------------------
// readiness

export interface WaitReadyOptions {
  what: string
  proc: ManagedProcess
  logFile: string
  timeoutMs: number
  /** Resolves true when the server answers; may throw (treated as not ready yet). */
  check: () => Promise<boolean>
  intervalMs?: number
}

export class ServerStartError extends Error {
  readonly log: string
  constructor(message: string, log: string) {
    super(`${message}\n--- last lines of the log ---\n${log}\n---`)
    this.name = 'ServerStartError'
    this.log = log
  }
}

/** Polls check() until true; on exit or timeout kills the process and throws with the log tail. */
export async function waitReady(options: WaitReadyOptions): Promise<void> {
  const { proc, what, logFile, timeoutMs } = options
  const started = Date.now()
  let lastError: unknown
  for (;;) {
    if (!proc.running) {
      const info = proc.exitInfo!
      throw new ServerStartError(
        `${what} exited during startup (code ${info.code}, signal ${info.signal})`,
        tailFile(logFile, 30, proc.logStart),
      )
    }
    try {
      if (await options.check()) return
    } catch (err) {
      lastError = err
    }
    if (Date.now() - started > timeoutMs) {
      await proc.kill()
      const last = lastError instanceof Error ? ` (last check error: ${lastError.message})` : ''
      throw new ServerStartError(
        `${what} was not ready after ${timeoutMs} ms${last}; killed it`,
        tailFile(logFile, 30, proc.logStart),
      )
    }
    await sleep(options.intervalMs ?? 50)
  }
}

/** true when a startup failure looks like a port clash (worth a retry on a fresh port). */
export function looksLikePortClash(err: unknown): boolean {
  return (
    err instanceof ServerStartError &&
    /address already in use|EADDRINUSE|could not bind|bind: address/i.test(err.log)
  )
}

// ---------------------------------------------------------------------------------------------
// users (postgres refuses to run as root)

export interface RunAs {
  name: string
  uid: number
  gid: number
}

function lookupUser(name: string): RunAs | undefined {
  try {
    const passwd = readFileSync('/etc/passwd', 'utf8')
    for (const line of passwd.split('\n')) {
      const [user, , uid, gid] = line.split(':')
      if (user === name && uid !== undefined && gid !== undefined) {
        return { name, uid: Number(uid), gid: Number(gid) }
      }
    }
  } catch {
    // no /etc/passwd
  }
  return undefined
}

/**
 * When running as root: an unprivileged account to run a server as — `postgres` (made by the
 * Debian package), else `nobody`, else a `conclave-test` system user made with useradd.
 * undefined when not root (run as ourselves).
 */
export function unprivilegedUser(): RunAs | undefined {
  if (process.getuid?.() !== 0) return undefined
  const found = lookupUser('postgres') ?? lookupUser('nobody') ?? lookupUser('conclave-test')
  if (found) return found
  try {
    execFileSync(
      'useradd',
      ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', 'conclave-test'],
      {
        stdio: 'ignore',
      },
    )
  } catch (err) {
    throw new Error(
      `running as root, found no "postgres" or "nobody" user and useradd conclave-test failed: ${String(err)}`,
    )
  }
  const made = lookupUser('conclave-test')
  if (!made) throw new Error('useradd conclave-test succeeded but the user is not in /etc/passwd')
  return made
}

/** true when every ancestor of dir lets "others" traverse it (so a dropped-privilege server can). */
export function traversableByOthers(dir: string): boolean {
  let current = dir
  for (;;) {
    try {
      if ((statSync(current).mode & 0o001) === 0) return false
    } catch {
      return false
    }
    const parent = dirname(current)
    if (parent === current) return true
    current = parent
  }
}

// ---------------------------------------------------------------------------------------------
// the handle shared by the three servers

export abstract class BaseServer implements ServerHandle {
  readonly dir: string
  readonly logFile: string
  protected proc: ManagedProcess | undefined
  protected readonly startTimeoutMs: number
  /** What stop() sends first. */
  protected stopSignal: NodeJS.Signals = 'SIGTERM'
  protected abstract readonly what: string
  private stopped = false

  protected constructor(dir: string, logFile: string, startTimeoutMs: number) {
    this.dir = dir
    this.logFile = logFile
    this.startTimeoutMs = startTimeoutMs
  }

  /** Spawns the server and waits until it answers (kills it and throws otherwise). */
  protected abstract spawnAndWait(): Promise<ManagedProcess>

  /** First start; used by the start* functions. */
  async start(): Promise<void> {
    this.proc = await this.spawnAndWait()
  }

  get pid(): number {
    if (!this.proc) throw new Error(`${this.what} was never started`)
    return this.proc.pid
  }

  get running(): boolean {
    return this.proc?.running ?? false
  }

  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    try {
      await this.proc?.terminate(this.stopSignal)
    } finally {
      await removeDir(this.dir)
    }
  }

  async kill(): Promise<void> {
    await this.proc?.kill()
  }

  async pause(): Promise<void> {
    if (!this.proc?.running) throw new Error(`${this.what}: pause() while not running`)
    this.proc.pause()
  }

  async resume(): Promise<void> {
    this.proc?.resume()
  }

  async restart(options: RestartOptions = {}): Promise<void> {
    if (this.stopped) throw new Error(`${this.what}: restart() after stop()`)
    if (this.proc?.running) {
      if (options.graceful) await this.proc.terminate(this.stopSignal)
      else await this.proc.kill()
    }
    this.proc = await this.spawnAndWait()
  }

  logTail(lines = 30): string {
    return tailFile(this.logFile, lines)
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop()
  }
}

/**
 * Runs `attempt` (which picks its ports and starts a server), again (up to 3 tries) when the
 * failure looks like a port taken between freePort() and the server's bind. With fixed ports
 * (chosen by the caller) there is no retry.
 */
export async function retryOnPortClash<T>(
  fixedPorts: boolean,
  attempt: () => Promise<T>,
): Promise<T> {
  for (let tries = 1; ; tries++) {
    try {
      return await attempt()
    } catch (err) {
      if (fixedPorts || tries >= 3 || !looksLikePortClash(err)) throw err
    }
  }
}

// ---------------------------------------------------------------------------------------------
// nothing outlives the test process

const liveProcesses = new Set<ManagedProcess>()
const liveDirs = new Set<string>()

function killEverythingSync(): void {
  for (const proc of liveProcesses) {
    proc.signal('SIGKILL', proc.pids())
  }
  liveProcesses.clear()
  for (const dir of liveDirs) {
    try {
      rmSync(dir, { recursive: true, force: true })
    } catch {
      // best effort
    }
  }
  liveDirs.clear()
}

let hooksInstalled = false

function installExitHooks(): void {
  if (hooksInstalled) return
  hooksInstalled = true
  process.on('exit', killEverythingSync)
  // A fatal signal skips 'exit': on SIGINT/SIGTERM kill the servers first. Then, when no
  // other listener handles the signal (they may have been added before or after us), die of it
  // as the default action would; otherwise leave the rest to that listener.
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    const onSignal = (): void => {
      killEverythingSync()
      process.removeListener(sig, onSignal)
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig)
    }
    process.on(sig, onSignal)
  }
}
