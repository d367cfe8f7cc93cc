/** conclave/memory: the floor every other backend is compared with (one process, no I/O). */
import { MemoryBackend } from '../../src/backends/memory.js'
import type { Subject } from '../scenarios.js'
import { conclaveSubject } from './conclave.js'

const ONE_PROCESS = 'one process: no other process can share the map (conclave/cluster can)'

/** conclave on one MemoryBackend shared by every candidate; a request is one backend call. */
export function memorySubject(): Subject {
  const shared = new MemoryBackend()
  return conclaveSubject({
    name: 'conclave/memory',
    open: () => ({ backend: shared, close: async () => {} }),
    cannot: {
      crash: ONE_PROCESS,
      takeover: ONE_PROCESS,
      partition: 'no network path: everything is in process',
      'renew-many.server CPU': 'no server: the grants live in the bench process',
    },
    close: () => shared.close(),
  })
}
