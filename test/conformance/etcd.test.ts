import { randomBytes } from 'node:crypto'
import { Etcd3 } from 'etcd3'
import { afterAll } from 'vitest'
import { etcdBackend } from '../../src/backends/etcd/index.js'
import { startEtcd } from '../../testkit/index.js'
import { runConformance } from './suite.js'

// A private etcd for this file; every backend gets its own client, as another process would.
const server = await startEtcd()
const prefix = `conformance-${randomBytes(4).toString('hex')}/`
afterAll(() => server.stop())

runConformance('etcd', {
  // etcd lease TTLs are whole seconds: 2 s is the shortest lease this backend keeps exactly.
  leaseMs: 2000,
  // A release grants the next waiting key in its own transaction (its backend's watch names it).
  handoff: true,
  backend: async () => {
    const client = new Etcd3({ hosts: server.endpoint })
    const backend = etcdBackend({ client, prefix })
    // The suite closes the backend; the client is the user's to close, so close it after.
    const close = backend.close.bind(backend)
    backend.close = async () => {
      await close()
      client.close()
    }
    return backend
  },
})
