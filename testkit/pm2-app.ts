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
election.on('error', () => {})
log(`started ${process.env.pm_id} ${process.env.exec_mode} ${at()}`)
void election.run(async (term) => {
  log(`elected ${term.token} ${at()} ${process.env.pm_id}`)
  await new Promise<void>((resolve) => term.signal.addEventListener('abort', () => resolve()))
  log(`revoked ${term.token} ${at()}`)
})
// With CONCLAVE_AGENT=1, the process agent over the same backend: every 250 ms a call of the
// designated process (`called <its pid> <at>` or `callfailed <code> <at>`), every second a
// gather of every instance (`gathered <answers> <at>`).
const agent =
  process.env.CONCLAVE_AGENT === '1'
    ? new ProcessAgent({
        backend,
        leaseMs: Number(process.env.CONCLAVE_LEASE ?? 2000),
        onError: () => {},
      })
    : undefined
if (agent) {
  const whoami = agent.runInPrimary('whoami', () => process.pid, { timeoutMs: 2_000 })
  agent.register('pid', () => process.pid)
  const calls = setInterval(() => {
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
