import { afterAll } from 'vitest'
import { localDir, localPool } from '../../testkit/local.js'
import { runConformance } from './suite.js'

// Each backend is a separate process on one `local` app: its calls cross IPC to that process,
// then its unix socket to the hub (which the first of them hosts).
const dir = localDir()
const pool = localPool({ name: 'conformance', dir: dir.dir })
afterAll(async () => {
  await pool.close()
  await dir.remove()
})

runConformance('local (separate processes)', {
  leaseMs: 400,
  handoff: true,
  // The hub keeps grants in memory and hands them over; records would not survive a hub crash.
  records: false,
  backend: async () => (await pool.next()).backend,
})
