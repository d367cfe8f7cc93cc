import { setupClusterPrimary, forkWorker } from '../cluster/fixture.js'
import { runConformance } from './suite.js'

// Each backend is a real forked worker whose calls cross the cluster IPC to this primary.
setupClusterPrimary('advanced')

runConformance('cluster (advanced serialization)', {
  leaseMs: 400,
  backend: async () => (await forkWorker()).backend,
})
