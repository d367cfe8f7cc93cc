/**
 * `conclave run --backend URL --name NAME [--tickets N] [--lease 15s] [--grace 10s] [--forever]
 *  -- CMD ARGS...`: runs CMD only while this process holds NAME (the counterpart of `consul lock`
 * and `etcdctl elect`).
 *
 * The command never outlives its term, nor `conclave run`:
 * - CMD runs under a small supervisor (a plain `node -e` process) that leads a new process group
 *   holding CMD and all its descendants. The supervisor is tied to `conclave run` by an IPC
 *   channel: when `conclave run` dies, even by SIGKILL, the kernel closes the channel and the
 *   supervisor SIGKILLs the whole group at once.
 * - The supervisor is also a dead man's switch: `conclave run` tells it the term's remaining time
 *   every PULSE_MS. If the deadline passes and `conclave run` has gone silent (paused, stalled),
 *   the supervisor stops the group itself (SIGTERM, SIGKILL after the grace period).
 * - When the term ends, the group gets SIGTERM, then SIGKILL after the grace. Every signal to
 *   the group goes through the supervisor, so the command never gets a second SIGTERM from the
 *   switch and from `conclave run` both (many programs treat a second one as "quit now");
 *   `conclave run` only SIGKILLs the group itself if the supervisor fails to.
 * What escapes the group (a descendant that calls setsid() to daemonize) is out of reach.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { hostname } from 'node:os'
import { constants } from 'node:os'
import { fileURLToPath } from 'node:url'
import type { Backend } from '../backend.js'
import { Election } from '../election.js'
import type { Term } from '../term.js'
import { backendFromUrl } from './backends.js'
import { formatDuration } from '../validate.js'
import { describeError, EXIT, redact } from './report.js'

/** The parsed flags of `conclave run`. */
export interface RunOptions {
  backend: string
  name: string
  tickets: number
  leaseMs: number
  graceMs: number
  forever: boolean
  /** Give up (EXIT.notElected) when a campaign has not won within this many ms. */
  waitMs: number | undefined
  id: string | undefined
  command: string[]
  /** Where conclave's own lines go (the command's output is its own). */
  log: (line: string) => void
}

/** How often `conclave run` tells the supervisor the term's remaining time. */
const PULSE_MS = 100
/** The supervisor acts on a passed deadline only after this long without a pulse. */
const SILENCE_MS = 400

/** conclave run's own SIGKILL, should the supervisor fail to send it after the grace. */
const FALLBACK_KILL_MS = 1_000
/** How long releasing and closing the backend may take on the way out. */
const CLOSE_BOUND_MS = 5_000

/** Signals forwarded to the command's process group. */
const FORWARDED: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2']
/** Forwarded signals that also mean "stop": no re-campaign, SIGKILL after the grace. */
const TERMINATING = new Set<NodeJS.Signals>(['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'])

/** The supervisor program (src/cli/supervisor.cjs, copied beside this file in dist). */
const SUPERVISOR = fileURLToPath(new URL('./supervisor.cjs', import.meta.url))

interface ExitReport {
  code: number | null
  signal: NodeJS.Signals | null
  watchdog: boolean
}

/** How CMD ended, as `conclave run` passes it on. */
export interface CommandResult {
  /** The exit code to pass on: the command's, or 128 + its signal's number. */
  code: number
  description: string
  /** The supervisor stopped CMD: conclave run went silent past the term's deadline. */
  watchdog?: boolean
}

function signalCode(signal: NodeJS.Signals | null): number {
  return 128 + (signal ? (constants.signals[signal] ?? 0) : 0)
}

/** CMD under its supervisor, in its own process group. */
class Supervised {
  readonly child: ChildProcess
  readonly exited: Promise<CommandResult>
  done = false
  #killTimer: NodeJS.Timeout | undefined

  constructor(
    command: string[],
    env: NodeJS.ProcessEnv,
    readonly graceMs: number,
  ) {
    this.child = spawn(
      process.execPath,
      [SUPERVISOR, JSON.stringify(command), String(graceMs), String(SILENCE_MS)],
      { detached: true, stdio: ['inherit', 'inherit', 'inherit', 'ipc'], env },
    )
    let report: ExitReport | undefined
    let spawnError: { code?: string; message: string } | undefined
    let startError: Error | undefined
    this.child.on('message', (message: { exit?: ExitReport; spawnError?: typeof spawnError }) => {
      if (message.exit) report = message.exit
      if (message.spawnError) spawnError = message.spawnError
    })
    this.child.on('error', (error) => (startError ??= error))
    this.exited = new Promise((resolve) => {
      // 'close' comes after both the exit and the IPC channel's end: every report has arrived.
      this.child.once('close', (code, signal) => {
        this.done = true
        clearTimeout(this.#killTimer)
        // The supervisor kills its group on the way out; this covers a supervisor killed alone.
        this.signal('SIGKILL')
        if (spawnError) {
          resolve({
            code: spawnError.code === 'ENOENT' ? 127 : 126,
            description: `could not start: ${spawnError.message}`,
          })
        } else if (report) {
          const how =
            report.signal === null
              ? `exited with code ${report.code}`
              : `was killed by ${report.signal}`
          resolve({
            code: report.signal === null ? (report.code ?? 1) : signalCode(report.signal),
            description: report.watchdog
              ? `${how} (stopped by the supervisor: conclave run went silent past the term's deadline)`
              : how,
            watchdog: report.watchdog,
          })
        } else if (startError) {
          resolve({
            code: 126,
            description: `could not start the supervisor: ${startError.message}`,
          })
        } else {
          // The supervisor (and so its group) was killed before the command's exit was seen.
          resolve({
            code: signal === null ? (code ?? 1) : signalCode('SIGKILL'),
            description: `was killed with its process group (supervisor ${signal ?? `exit ${code}`})`,
          })
        }
      })
    })
  }

  get pid(): number | undefined {
    return this.child.pid
  }

  /** Sends `signal` to the command's whole process group, directly. */
  signal(signal: NodeJS.Signals): void {
    if (this.child.pid === undefined) return
    try {
      process.kill(-this.child.pid, signal)
    } catch {
      // ESRCH: the group is gone already.
    }
  }

  /**
   * Forwards `signal` to the group through the supervisor (which keeps the command from getting
   * SIGTERM twice); with `thenKill`, SIGKILL follows after the grace period.
   */
  forward(signal: NodeJS.Signals, thenKill: boolean): void {
    if (!this.#send({ signal, thenKill })) this.signal(signal)
    if (thenKill) this.#fallbackKill()
  }

  /** SIGTERM to the group, SIGKILL after the grace period (done by the supervisor). Once. */
  stop(): void {
    if (!this.#send({ stop: true })) this.signal('SIGTERM')
    this.#fallbackKill()
  }

  /** Should the supervisor not do its job (killed, stuck), SIGKILL the group a little later. */
  #fallbackKill(): void {
    if (this.done || this.#killTimer) return
    this.#killTimer = setTimeout(() => this.signal('SIGKILL'), this.graceMs + FALLBACK_KILL_MS)
    this.#killTimer.unref()
  }

  #send(message: object): boolean {
    if (!this.child.connected) return false
    try {
      this.child.send(message, () => {})
      return true
    } catch {
      return false
    }
  }

  /** Tells the supervisor how long the term lasts from now. */
  pulse(untilMs: number): void {
    this.#send({ until: untilMs })
  }
}

/** Runs the command while holding the resource; resolves with the exit code to use. */
export async function runCommand(options: RunOptions): Promise<number> {
  const { log, name, command, graceMs } = options
  const backend: Backend = await backendFromUrl(options.backend, '--backend')
  let election: Election
  try {
    election = new Election(backend, name, {
      tickets: options.tickets,
      leaseMs: options.leaseMs,
      ...(options.id === undefined ? {} : { id: options.id }),
      // Published to everyone who can read the backend: no password from CMD's arguments.
      metadata: {
        pid: process.pid,
        host: hostname(),
        command: redact(command.join(' ')).slice(0, 200),
      },
    })
  } catch (error) {
    await backend.close()
    throw error
  }
  election.on('error', (error) => log(`backend error (retrying): ${describeError(error)}`))
  // Why it waits, each time the reason changes (a fresh Redis's startup grace, held by another):
  // keyed on the code and the holders, not the text, which may carry a changing number.
  let waitingFor: string | undefined
  election.on('waiting', (info) => {
    const what = JSON.stringify([info.code, info.holders.map((h) => h.candidate)])
    if (what === waitingFor) return
    waitingFor = what
    log(
      `waiting: ${info.reason} (${info.code}; asking again within ${formatDuration(info.retryInMs)})`,
    )
  })
  election.on('elected', () => (waitingFor = undefined))

  let stopping: NodeJS.Signals | undefined
  const stopCampaign = new AbortController()
  let current: Supervised | undefined
  const onSignal = (signal: NodeJS.Signals) => {
    const terminating = TERMINATING.has(signal)
    if (terminating) stopping ??= signal
    if (current) {
      current.forward(signal, terminating)
    } else if (terminating) {
      stopCampaign.abort()
    }
  }
  const listeners = FORWARDED.map((signal) => {
    const listener = () => onSignal(signal)
    process.on(signal, listener)
    return [signal, listener] as const
  })

  try {
    for (;;) {
      let term: Term
      log(
        `waiting for ${name} (candidate ${election.id}${options.waitMs === undefined ? '' : `, at most ${formatDuration(options.waitMs)}`})`,
      )
      const deadline =
        options.waitMs === undefined ? undefined : AbortSignal.timeout(options.waitMs)
      try {
        term = await election.campaign({
          signal: deadline ? AbortSignal.any([stopCampaign.signal, deadline]) : stopCampaign.signal,
        })
      } catch (error) {
        if (stopping) return signalCode(stopping)
        if (deadline?.aborted) {
          log(`not elected within ${formatDuration(options.waitMs!)} (--wait): giving up`)
          return EXIT.notElected
        }
        throw error
      }
      if (stopping) return signalCode(stopping)
      log(`holding ${name}, token ${term.token}: starting ${command.join(' ')}`)
      const child = new Supervised(
        command,
        {
          ...process.env,
          CONCLAVE_TOKEN: String(term.token),
          CONCLAVE_LEADER_ID: election.id,
          CONCLAVE_RESOURCE: name,
        },
        graceMs,
      )
      current = child
      child.pulse(term.remainingMs)
      const pulse = setInterval(() => child.pulse(term.remainingMs), PULSE_MS)
      pulse.unref()
      const ended = new Promise<'ended'>((resolve) => {
        if (term.signal.aborted) resolve('ended')
        else term.signal.addEventListener('abort', () => resolve('ended'), { once: true })
      })
      const first = await Promise.race([child.exited.then(() => 'exited' as const), ended])
      if (first === 'ended' && !child.done) {
        log(
          `term ${term.token} on ${name} ended (${term.endReason ?? 'expired'}): SIGTERM to the command, SIGKILL after ${graceMs} ms`,
        )
        child.stop()
      }
      const result = await child.exited
      clearInterval(pulse)
      current = undefined
      log(`the command ${result.description}`)
      // The term ended under CMD (not by our own stop): say so with a code of its own.
      const lost =
        result.watchdog ||
        (first === 'ended' && (term.endReason === 'lost' || term.endReason === 'expired'))
      if (stopping) return result.code
      if (lost && !options.forever) {
        log(`exiting with ${EXIT.lost}: the term was lost while the command ran`)
        return EXIT.lost
      }
      // A command that exited on its own ends the run; a lost term (even one the watchdog
      // stopped, so CMD exited first) campaigns again with --forever.
      if ((first === 'exited' && !lost) || !options.forever) return result.code
      log(`campaigning again for ${name} (--forever)`)
    }
  } finally {
    for (const [signal, listener] of listeners) process.off(signal, listener)
    // Releases the grant (if held) so a waiting `conclave run` takes over in one round trip;
    // bounded, so an unreachable backend cannot keep us here (the lease then expires by itself).
    let timer: NodeJS.Timeout | undefined
    const bound = new Promise<void>((resolve) => (timer = setTimeout(resolve, CLOSE_BOUND_MS)))
    await Promise.race([
      (async () => {
        await election.close()
        await backend.close()
      })().catch((error: unknown) => log(`closing: ${describeError(error)}`)),
      bound,
    ])
    clearTimeout(timer)
  }
}
