// The app tests run under PM2 (cluster or fork mode, several instances): every instance
// campaigns for one resource on localBackend({ name, dir }) and appends what happens to its
// own file in $CONCLAVE_RECORDS: `elected <token> <at>` and `revoked <token> <at>` (host-clock ms),
// so the test can check that no two terms ever overlapped. It exits cleanly on SIGINT (PM2's
// stop and reload), resigning first.
import { appendFileSync } from 'node:fs'
import { join } from 'node:path'
import { localBackend } from '../src/backends/local/index.js'
import { Election } from '../src/election.js'
import { ProcessAgent } from '../src/agent/index.js'

const records = process.env.CONCLAVE_RECORDS!
const file = join(records, `${process.pid}.log`)
const at = () => (performance.timeOrigin + performance.now()).toFixed(3)
const log = (line: string) => appendFileSync(file, `${line}\n`)

const backend = localBackend({ name: 'pm2-app', dir: process.env.CONCLAVE_DIR! })
const election = new Election(backend, 'pm2/leader', {
  leaseMs: Number(process.env.CONCLAVE_LEASE ?? 2000),
  metadata: { pmId: process.env.pm_id ?? null },
})
// `err <where>:<code> <at> <message>`: what went wrong, for a failing test's message.
const logError = (where: string) => (e: Error & { code?: string }) =>
  log(`err ${where}:${e.code ?? 'none'} ${at()} ${e.message}`)
election.on('error', logError('election'))
log(`started ${process.env.pm_id} ${process.env.exec_mode} ${at()}`)
void election.run(async (term) => {
  log(`elected ${term.token} ${at()} ${process.env.pm_id}`)
  await new Promise<void>((resolve) => term.signal.addEventListener('abort', () => resolve()))
  log(`revoked ${term.token} ${at()}`)
})
// With CONCLAVE_AGENT=1, the process agent over the same backend: every 250 ms a call of the
// designated process (`called <its pid> <at>` or `callfailed <code> <at>`), every second a
// gather of every instance (`gathered <answers> <at>`); `hub <at>` when it becomes the hub.
const agent =
  process.env.CONCLAVE_AGENT === '1'
    ? new ProcessAgent({
        backend,
        leaseMs: Number(process.env.CONCLAVE_LEASE ?? 2000),
        onError: logError('agent'),
      })
    : undefined
if (agent) {
  const whoami = agent.runInPrimary('whoami', () => process.pid, { timeoutMs: 2_000 })
  agent.register('pid', () => process.pid)
  let wasHub = false
  const calls = setInterval(() => {
    // `hub <at>` when this instance becomes the app's hub (the test stops it by that).
    if (backend.isHub !== wasHub) {
      wasHub = backend.isHub
      if (wasHub) log(`hub ${at()}`)
    }
    whoami().then(
      (pid) => log(`called ${pid} ${at()}`),
      (error: { code?: string }) => log(`callfailed ${error.code ?? 'none'} ${at()}`),
    )
  }, 250)
  const gathers = setInterval(() => {
    agent.gather('pid', [], { timeoutMs: 1_000 }).then(
      (entries) => log(`gathered ${entries.filter((e) => e.ok).length} ${at()}`),
      () => {},
    )
  }, 1_000)
  calls.unref()
  gathers.unref()
  if (process.env.CONCLAVE_AGENT_SLOW === '1') {
    // With CONCLAVE_AGENT_SLOW=1, every second a call that runs 40 s in the designated process
    // (timeout 120 s): `slowdone <its pid> <at>` or `slowfailed <code> <at> <message>`. One in flight when
    // the designated process or the hub goes must fail at once, never wait out its timeout.
    const slow = agent.runInPrimary(
      'slow',
      () => new Promise((resolve) => setTimeout(() => resolve(process.pid), 40_000)),
      { timeoutMs: 120_000 },
    )
    const slows = setInterval(() => {
      slow().then(
        (pid) => log(`slowdone ${String(pid)} ${at()}`),
        (error: Error & { code?: string }) =>
          log(`slowfailed ${error.code ?? 'none'} ${at()} ${error.message}`),
      )
    }, 1_000)
    slows.unref()
  }
}
const keepAlive = setInterval(() => {}, 1_000)
let stopping = false
const stop = () => {
  if (stopping) return
  stopping = true
  void (agent?.close() ?? Promise.resolve())
    .then(() => election.close())
    .then(() => backend.close())
    .finally(() => {
      clearInterval(keepAlive)
      process.exit(0)
    })
}
process.on('SIGINT', stop)
process.on('SIGTERM', stop)
process.on('message', (m) => {
  if (m === 'shutdown') stop()
})
