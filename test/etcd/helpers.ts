// Small helpers for the etcd backend's own tests (and its benchmark): a backend with its own
// client, waiting, and counting what etcd served from its /metrics endpoint.
import { Etcd3 } from 'etcd3'
import { etcdBackend, type EtcdBackend } from '../../src/backends/etcd/index.js'

export { sleep, until } from '../helpers/wait.js'

/** A backend on its own user-owned client (closed along with the backend), as a process has. */
export function backendWithClient(endpoint: string, prefix: string): EtcdBackend {
  const client = new Etcd3({ hosts: endpoint })
  const backend = etcdBackend({ client, prefix })
  const close = backend.close.bind(backend)
  backend.close = async () => {
    await close()
    client.close()
  }
  return backend
}

/**
 * gRPC messages etcd received, per method (e.g. LeaseKeepAlive, Txn, Range), from /metrics: one
 * per unary call, one per keepalive written on a (long-lived) stream.
 */
export async function grpcReceived(endpoint: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${endpoint}/metrics`)).text()
  const counts: Record<string, number> = {}
  for (const line of text.split('\n')) {
    const match = /^grpc_server_msg_received_total\{[^}]*grpc_method="(\w+)"[^}]*\} (\S+)$/.exec(
      line,
    )
    if (match) counts[match[1]!] = (counts[match[1]!] ?? 0) + Number(match[2])
  }
  return counts
}

export function difference(
  after: Record<string, number>,
  before: Record<string, number>,
): Record<string, number> {
  const out: Record<string, number> = {}
  for (const [method, count] of Object.entries(after)) {
    const delta = count - (before[method] ?? 0)
    if (delta) out[method] = delta
  }
  return out
}

/** The keys under a resource, oldest first, straight from etcd. */
export async function queuedKeys(client: Etcd3, prefix: string, resource: string) {
  return client.getAll().prefix(`${prefix}${resource}#`).sort('Create', 'Ascend').keys()
}
