// The app tests run under PM2 (cluster or fork mode, several instances): every instance
// campaigns for one resource on localBackend({ name, dir }) and appends what happens to its
// own file in $CONCLAVE_RECORDS: `elected <token> <at>` and `revoked <token> <at>` (host-clock ms),
// so the test can check that no two terms ever overlapped. It exits cleanly on SIGINT (PM2's
// stop and reload), resigning first.
import { appendFileSync } from 'node:fs'
import { join } from 'node:path'
import { localBackend } from '../src/backends/local/index.js'
import { Election } from '../src/election.js'

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
const keepAlive = setInterval(() => {}, 1_000)
let stopping = false
const stop = () => {
  if (stopping) return
  stopping = true
  void election
    .close()
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
