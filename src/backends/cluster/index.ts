/**
 * `conclave/cluster`: elections across the processes of one node:cluster app, no server.
 * The primary hosts the state (a memory backend behind a Hub); each worker's backend relays
 * over the cluster's IPC channel. Works with either `serialization` mode. A worker that exits
 * or disconnects loses its grants at once.
 *
 * Call `clusterBackend()` (or `serveCluster()`) in the primary before forking workers.
 */
import cluster, { type Worker } from 'node:cluster'
import type { Backend } from '../../backend.js'
import type { Clock } from '../../clock.js'
import { ConclaveError, OptionsError } from '../../errors.js'
import { MemoryBackend } from '../memory.js'
import { Hub, type HubConnection } from './hub.js'
import { RemoteBackend, type Transport } from './remote.js'

export { Hub, type HubConnection, type HubOptions } from './hub.js'
export { RemoteBackend, type RemoteBackendOptions, type Transport } from './remote.js'

export interface ClusterBackendOptions {
  /** Workers: how long a call may wait for the primary's answer. Default 5000. */
  requestTimeoutMs?: number
  /** Primary: the clock the shared state expires on (tests). Only the first call's counts. */
  clock?: Clock
  /** Primary: told about malformed IPC messages and failed sends. */
  onError?: (error: Error) => void
}

interface PrimaryState {
  memory: MemoryBackend
  hub: Hub
  connections: Map<number, HubConnection>
}

let primary: PrimaryState | undefined

/** Installs the hub in the primary (idempotent) and returns it. */
export function serveCluster(options: ClusterBackendOptions = {}): Hub {
  if (!cluster.isPrimary) {
    throw new ConclaveError(
      'ERR_CONCLAVE_NOT_PRIMARY',
      'serveCluster() runs in the cluster primary; workers call clusterBackend().',
    )
  }
  if (primary) return primary.hub
  const memory = new MemoryBackend(options.clock ? { clock: options.clock } : {})
  const hub = new Hub(memory, options.onError ? { onError: options.onError } : {})
  const connections = new Map<number, HubConnection>()
  const state: PrimaryState = { memory, hub, connections }
  primary = state
  const drop = (worker: Worker) => {
    const connection = connections.get(worker.id)
    if (!connection) return
    connections.delete(worker.id)
    void connection.close()
  }
  cluster.on('message', (worker: Worker, message: unknown) => {
    if (!worker.isConnected()) return
    let connection = connections.get(worker.id)
    if (!connection) {
      connection = hub.connect((reply) => {
        if (!worker.isConnected()) return
        worker.send(reply, (error: Error | null) => {
          if (error) options.onError?.(error)
        })
      })
      connections.set(worker.id, connection)
    }
    connection.receive(message)
  })
  cluster.on('disconnect', drop)
  cluster.on('exit', drop)
  return hub
}

/**
 * The cluster backend for this process: in the primary, direct access to the shared state
 * (and the hub is installed); in a worker, a relay to the primary over IPC.
 */
export function clusterBackend(options: ClusterBackendOptions = {}): Backend {
  if (typeof options !== 'object' || options === null) {
    throw new OptionsError('options', options, 'clusterBackend() options must be an object.')
  }
  if (
    options.requestTimeoutMs !== undefined &&
    (!Number.isInteger(options.requestTimeoutMs) || options.requestTimeoutMs < 1)
  ) {
    throw new OptionsError(
      'requestTimeoutMs',
      options.requestTimeoutMs,
      'requestTimeoutMs must be a positive integer number of milliseconds.',
    )
  }
  if (cluster.isPrimary) {
    serveCluster(options)
    return primary!.memory.handle('cluster')
  }
  if (typeof process.send !== 'function') {
    throw new ConclaveError(
      'ERR_CONCLAVE_NO_IPC',
      'This cluster worker has no IPC channel to the primary.',
    )
  }
  return new RemoteBackend(processTransport(), {
    name: 'cluster',
    requestTimeoutMs: options.requestTimeoutMs ?? 5_000,
    hint: 'Is clusterBackend() or serveCluster() called in the primary before forking?',
  })
}

/** This process's IPC channel to its parent as a transport. */
export function processTransport(): Transport {
  return {
    send(message) {
      if (!process.connected) throw new Error('the IPC channel is closed')
      process.send!(message, undefined, undefined, () => {})
    },
    onMessage(listener) {
      process.on('message', listener)
      return () => process.off('message', listener)
    },
    onClose(listener) {
      process.on('disconnect', listener)
      return () => process.off('disconnect', listener)
    },
  }
}
