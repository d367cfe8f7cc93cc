import { afterAll } from 'vitest'
import { setupClusterPrimary, workerPool } from '../cluster/fixture.js'
import { runConformance } from './suite.js'

// Each backend is a real forked worker whose calls cross the cluster IPC to this primary,
// forked ahead of need (a worker takes a fraction of a second to start, more under load).
await setupClusterPrimary('advanced')
const pool = workerPool()
afterAll(() => pool.close())

runConformance('cluster (advanced serialization)', {
  leaseMs: 400,
  handoff: true,
  backend: () => pool.next(),
})
