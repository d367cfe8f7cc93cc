// The one candidate program the tests, and the chaos harness, run in a process of its own (a
// forked child, or a node:cluster worker for the cluster backend), to kill, pause or stall it.
//   node --import tsx testkit/candidate.ts <backend URL> <resource> [<election options JSON>]
//        [<program options JSON>]
// The backend comes from the URL through src/cli/backends.ts (the one scheme -> factory table),
// or, with the program option `connect: { module, name }`, from `connect(name, url)` exported by
// that module (chaos: its deliberately unsafe self-test backends are no URL scheme).
// Program options: `manual` (campaign only when told, not at once), `workMs` (while leading,
// write through the parent's fenced register: check `term.active`, work for workMs, then send
// a `write` with the token it checked; a pause or stall inside that gap is what a fence catches).
//
// The protocol is IPC messages, not stdout lines: every program this replaces spoke IPC, and a
// node:cluster worker's channel to its primary is IPC (the cluster backend's own messages share
// it, hence the `kit: 1` mark on each of ours). Times are host-clock ms (`now()` below).
//   sends:   ready {at}; elected {token, candidate, at, deadline};
//            revoked {token, reason, at, deadline}; write {token, checkedAt};
//            stall {start, end}; error {message} (each message at most once a second);
//            closed {at}, then exits 0
//   accepts: campaign (again: manual mode); resign; stall {ms} (block the event loop);
//            close (also on a lost IPC channel)
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath, pathToFileURL } from 'node:url'
import type { Backend } from '../src/backend.js'
import { backendFromUrl } from '../src/cli/backends.js'
import { Election } from '../src/election.js'
import type { ElectionOptions } from '../src/options.js'

/** Marks this protocol's messages among others on the same channel. */
export const KIT = 1

export type CandidateMessage =
  | { kit: 1; type: 'ready'; at: number }
  | { kit: 1; type: 'elected'; token: number; candidate: string; at: number; deadline: number }
  | { kit: 1; type: 'revoked'; token: number; reason: string; at: number; deadline: number }
  | { kit: 1; type: 'write'; token: number; checkedAt: number }
  | { kit: 1; type: 'stall'; start: number; end: number }
  | { kit: 1; type: 'error'; message: string }
  | { kit: 1; type: 'closed'; at: number }

export type ParentMessage =
  | { kit: 1; type: 'campaign' }
  | { kit: 1; type: 'resign' }
  | { kit: 1; type: 'stall'; ms: number }
  | { kit: 1; type: 'close' }

export interface ProgramOptions {
  manual?: boolean
  workMs?: number
  connect?: { module: string; name: string }
}

export const CANDIDATE_PROGRAM = new URL('./candidate.ts', import.meta.url)
/** This program's path, for fork() and cluster.setupPrimary(). */
export const CANDIDATE_FILE = fileURLToPath(CANDIDATE_PROGRAM)

/** The arguments for `url`, `resource` and the options, in the order the program reads them. */
export function candidateArgs(
  url: string,
  resource: string,
  election: ElectionOptions = {},
  program: ProgramOptions = {},
): string[] {
  return [url, resource, JSON.stringify(election), JSON.stringify(program)]
}

export function isKitMessage(message: unknown): message is { kit: 1; type: string } {
  return (
    typeof message === 'object' &&
    message !== null &&
    (message as { kit?: unknown }).kit === KIT &&
    typeof (message as { type?: unknown }).type === 'string'
  )
}

/** Host-clock ms, sub-ms precise: comparable across processes. */
export function now(): number {
  return performance.timeOrigin + performance.now()
}

type Outgoing = CandidateMessage extends infer M
  ? M extends { kit: 1 }
    ? Omit<M, 'kit'>
    : never
  : never

function send(message: Outgoing): Promise<void> {
  return new Promise((resolve) => {
    if (!process.connected) return resolve()
    process.send!({ kit: KIT, ...message }, undefined, undefined, () => resolve())
  })
}

async function main(argv: string[]): Promise<void> {
  const [url, resource, electionJson, programJson] = argv
  if (url === undefined || !resource) {
    throw new Error(
      'usage: candidate.ts <backend URL> <resource> [<election options JSON>] [<program options JSON>]',
    )
  }
  const options = JSON.parse(electionJson ?? '{}') as ElectionOptions
  const program = JSON.parse(programJson ?? '{}') as ProgramOptions
  const toHost = (monotonic: number) => performance.timeOrigin + monotonic

  let backend: Backend
  if (program.connect) {
    const module = (await import(program.connect.module)) as {
      connect(name: string, url: string): Promise<Backend>
    }
    backend = await module.connect(program.connect.name, url)
  } else {
    backend = await backendFromUrl(url)
  }
  const election = new Election(backend, resource, options)

  // Errors are expected under faults: report each message, at most once a second per message.
  const lastReported = new Map<string, number>()
  election.on('error', (error) => {
    const message = `${(error as { code?: string }).code ?? error.name}: ${error.message.slice(0, 120)}`
    const last = lastReported.get(message) ?? 0
    if (performance.now() - last < 1_000) return
    lastReported.set(message, performance.now())
    void send({ type: 'error', message })
  })
  election.on('elected', (term) => {
    void send({
      type: 'elected',
      token: term.token,
      candidate: term.candidate,
      at: now(),
      deadline: toHost(term.deadline),
    })
  })
  election.on('revoked', (term, reason) => {
    void send({
      type: 'revoked',
      token: term.token,
      reason,
      at: now(),
      deadline: toHost(term.deadline),
    })
  })

  const workMs = program.workMs
  const running = program.manual
    ? Promise.resolve()
    : election.run(async (term) => {
        if (workMs === undefined) {
          await new Promise((resolve) => term.signal.addEventListener('abort', resolve))
          return
        }
        while (term.active) {
          const checkedAt = now()
          const token = term.token
          await sleep(workMs) // the work: a pause or a stall lands here most of the time
          void send({ type: 'write', token, checkedAt })
        }
      })

  let closing = false
  async function close(): Promise<void> {
    if (closing) return
    closing = true
    await election.close()
    await running.catch(() => {})
    await backend.close().catch(() => {})
    await send({ type: 'closed', at: now() })
    process.exit(0)
  }

  process.on('message', (message: unknown) => {
    if (!isKitMessage(message)) return
    const m = message as ParentMessage
    if (m.type === 'campaign') {
      void election.campaign().catch(() => {})
    } else if (m.type === 'resign') {
      void election.resign()
    } else if (m.type === 'stall') {
      // Block the event loop: no timer, no renewal, no signal until it is over.
      const start = now()
      const until = performance.now() + m.ms
      while (performance.now() < until) {
        // busy
      }
      void send({ type: 'stall', start, end: now() })
    } else if (m.type === 'close') {
      void close()
    }
  })
  // The parent is gone: leave as a closing candidate would.
  process.on('disconnect', () => void close())
  void send({ type: 'ready', at: now() })
}

// Run only as the program (the tests and the harness import its types and helpers).
if (
  process.argv[1] !== undefined &&
  pathToFileURL(process.argv[1]).href === CANDIDATE_PROGRAM.href
) {
  await main(process.argv.slice(2))
}
