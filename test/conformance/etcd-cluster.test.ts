import { randomBytes } from 'node:crypto'
import { afterAll } from 'vitest'
import { etcdBackend } from '../../src/backends/etcd/index.js'
import { startEtcdCluster } from '../../testkit/index.js'
import { runConformance } from './suite.js'

// A private 3-member etcd cluster for this file; every backend makes its own clients from all
// three endpoints (one per member, failing over between them), as another process would. Each
// backend starts with another member, so candidates talk to different members.
const cluster = await startEtcdCluster()
const prefix = `conformance-cluster-${randomBytes(4).toString('hex')}/`
afterAll(() => cluster.stop())
let next = 0

runConformance('etcd (3-member cluster)', {
  // etcd lease TTLs are whole seconds: 2 s is the shortest lease this backend keeps exactly.
  leaseMs: 2000,
  // A release grants the next waiting key in its own transaction (its backend's watch names it).
  handoff: true,
  backend: async () => {
    const first = next++ % cluster.endpoints.length
    const hosts = [...cluster.endpoints.slice(first), ...cluster.endpoints.slice(0, first)]
    return etcdBackend({ hosts, prefix })
  },
})
