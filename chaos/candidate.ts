// One candidate of a chaos run, in its own process (a forked child, or a cluster worker for
// the cluster backend). It campaigns through the backend its registry entry makes and, while it
// leads, writes through the harness's fenced register over IPC. Each write models the gap every
// real leader has between checking its term and the write landing: check `term.active`, work
// for workMs, then write with the token it checked. A pause or a stall inside that gap is what
// the fence must catch.
//   env: CHAOS_BACKEND, CHAOS_URL, CHAOS_RESOURCE, CHAOS_ID, CHAOS_LEASE_MS, CHAOS_TICKETS,
//        CHAOS_WORK_MS
import { setTimeout as sleep } from 'node:timers/promises'
import { Election } from '../src/election.js'
import { chaosBackend } from './backends.js'
import { type CandidateMessage, isChaosMessage, now } from './records.js'

type Outgoing = CandidateMessage extends infer M
  ? M extends { chaos: 1 }
    ? Omit<M, 'chaos'>
    : never
  : never

function send(message: Outgoing): Promise<void> {
  return new Promise((resolve) => {
    if (!process.connected) return resolve()
    process.send!({ chaos: 1, ...message }, undefined, undefined, () => resolve())
  })
}

function env(name: string): string {
  const value = process.env[name]
  if (value === undefined) throw new Error(`chaos candidate: ${name} is not set`)
  return value
}

const backendName = env('CHAOS_BACKEND')
const entry = chaosBackend(backendName)
if (!entry) throw new Error(`chaos candidate: unknown backend ${backendName}`)
const leaseMs = Number(env('CHAOS_LEASE_MS'))
const workMs = Number(env('CHAOS_WORK_MS'))
const toHost = (monotonic: number) => performance.timeOrigin + monotonic

const backend = await entry.connect(process.env.CHAOS_URL ?? '')
const election = new Election(backend, env('CHAOS_RESOURCE'), {
  id: env('CHAOS_ID'),
  leaseMs,
  tickets: Number(env('CHAOS_TICKETS')),
  drainMs: leaseMs,
})

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
  void send({ type: 'elected', token: term.token, at: now(), deadline: toHost(term.deadline) })
})
election.on('revoked', (term, reason) => {
  void send({
    type: 'revoked',
    token: term.token,
    at: now(),
    deadline: toHost(term.deadline),
    reason,
  })
})

const running = election.run(async (term) => {
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
  if (!isChaosMessage(message)) return
  const m = message as { type: string; ms?: number }
  if (m.type === 'stall' && typeof m.ms === 'number') {
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
// The harness is gone: leave as a closing candidate would.
process.on('disconnect', () => void close())
void send({ type: 'ready', at: now() })
