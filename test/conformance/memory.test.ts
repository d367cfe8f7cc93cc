import { MemoryBackend } from '../../src/backends/memory.js'
import { runConformance } from './suite.js'

// One store, a handle per simulated process.
const store = new MemoryBackend()

runConformance('memory', {
  leaseMs: 300,
  handoff: true,
  backend: async () => store.handle(),
})
