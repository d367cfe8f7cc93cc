/**
 * `conclave/cluster`: elections across the processes of one node:cluster app, no server.
 * The primary hosts the state (a memory backend behind a Hub); each worker's backend relays
 * over the cluster's IPC channel. Works with either `serialization` mode. A worker that exits
 * or disconnects loses its grants at once.
 *
 * Call `clusterBackend()` (or `serveCluster()`) in the primary before forking workers.
 *
 * Only the workers of one primary take part. Separate processes (two `node app.js`, PM2 fork
 * mode, containers) each have their own primary, so each gets its own hub and elects itself:
 * - a primary granted a term while it has forked no worker gets a one-time process warning
 *   (code `CONCLAVE_STANDALONE_CLUSTER`), decided one second after the first grant so a
 *   primary that campaigns just before forking does not see it;
 * - under PM2 (fork mode: separate processes; cluster mode: PM2's daemon is the primary and
 *   runs no hub) `clusterBackend()` and `serveCluster()` throw `ERR_CONCLAVE_PM2`.
 */
import cluster, { type Worker } from 'node:cluster'
import type { Backend } from '../../backend.js'
import type { Clock } from '../../clock.js'
import {
  type ErrorCode,
  NoIpcError,
  NotPrimaryError,
  OptionsError,
  Pm2Error,
  STANDALONE_CLUSTER_WARNING,
} from '../../errors.js'
import { checkOptions, optionalMilliseconds, renamedOption } from '../../validate.js'
import { MemoryBackend } from '../memory.js'
import { Hub, type HubConnection } from './hub.js'
import { RemoteBackend, type Transport } from './remote.js'
import { forwardingBackend } from '../kit.js'

export { Hub, type HubConnection, type HubOptions, type HubSession } from './hub.js'
export { RemoteBackend, type RemoteBackendOptions, type Transport } from './remote.js'

/** Options of `clusterBackend()` and `serveCluster()`. */
export interface ClusterBackendOptions {
  /** Workers: how long a call may wait for the primary's answer. Default 5000. */
  timeoutMs?: number
  /** Primary: the clock the shared state expires on (tests). Only the first call's counts. */
  clock?: Clock
  /** Primary: told about malformed IPC messages and failed sends. */
  onError?: (error: Error) => void
  /**
   * Skip the PM2 check (see `pm2Mode`). Only for a PM2 app of exactly one instance whose
   * process forks its own node:cluster workers (and their workers): PM2's environment cannot
   * tell that from `-i 4`. Default false.
   */
  allowPm2?: boolean
}

/** The warning code of a cluster backend that elects in one process only. */
export const STANDALONE_WARNING_CODE = STANDALONE_CLUSTER_WARNING
/** The error code of `clusterBackend()` refusing to run under PM2. */
export const PM2_ERROR_CODE = 'ERR_CONCLAVE_PM2' satisfies ErrorCode
/** How long after the first grant the standalone warning waits for a worker to be forked. */
const STANDALONE_GRACE_MS = 1_000

interface PrimaryState {
  memory: MemoryBackend
  hub: Hub
  connections: Map<number, HubConnection>
  /** A worker was forked (or was there when the hub was installed). */
  sawWorker: boolean
  /** The standalone check is armed or done: it runs once per process. */
  standaloneChecked: boolean
}

let primary: PrimaryState | undefined

/**
 * How PM2 runs this process, read from the environment PM2 gives every app process (`pm_id`
 * and `exec_mode`, set in both modes): `fork` (a separate process with an IPC channel to PM2's
 * daemon), `cluster` (a node:cluster worker of PM2's daemon), or undefined (not under PM2).
 */
export function pm2Mode(env: NodeJS.ProcessEnv = process.env): 'fork' | 'cluster' | undefined {
  if (env.pm_id === undefined) return undefined
  if (env.exec_mode === 'fork_mode') return 'fork'
  if (env.exec_mode === 'cluster_mode') return 'cluster'
  return undefined
}

const SHARED_BACKENDS =
  'Use a backend the processes share: redisBackend (conclave/redis), postgresBackend (conclave/postgres) or etcdBackend (conclave/etcd), or localBackend (conclave/local) for the processes of one machine.'

function checkPm2(options: ClusterBackendOptions): void {
  if (options.allowPm2 === true) return
  const mode = pm2Mode()
  const where = `pm_id ${process.env.pm_id}, exec_mode ${process.env.exec_mode}`
  // Fork mode: PM2 starts every instance as its own process (with an IPC channel to PM2, not a
  // node:cluster primary), so each one would host a hub of its own and elect itself.
  if (mode === 'fork' && cluster.isPrimary && typeof process.send === 'function') {
    throw new Pm2Error(
      'fork',
      `clusterBackend() runs under PM2 fork mode (${where}): PM2 starts each instance as a separate process, not as node:cluster workers of one primary, so every instance would get a hub of its own and lead at once (with -i 4, four leaders). ${SHARED_BACKENDS} If this PM2 app runs exactly one instance that forks its own node:cluster workers, pass { allowPm2: true }.`,
    )
  }
  // Cluster mode: the primary is PM2's daemon, which runs no conclave hub: calls would only time out.
  if (mode === 'cluster' && cluster.isWorker) {
    throw new Pm2Error(
      'cluster',
      `clusterBackend() runs under PM2 cluster mode (${where}): the node:cluster primary is PM2's own daemon, which runs no conclave hub, so no call would ever be answered. ${SHARED_BACKENDS} If this worker's primary is your own process running clusterBackend(), pass { allowPm2: true }.`,
    )
  }
}

/** Installs the hub in the primary (idempotent) and returns it. */
export function serveCluster(options: ClusterBackendOptions = {}): Hub {
  if (!cluster.isPrimary) {
    throw new NotPrimaryError()
  }
  checkPm2(options)
  if (primary) return primary.hub
  const memory = new MemoryBackend(options.clock ? { clock: options.clock } : {})
  const hub = new Hub(memory, {
    // A release hands the freed ticket to the next waiter in line, pushed to its worker only.
    session: () => memory.session(),
    ...(options.onError ? { onError: options.onError } : {}),
  })
  const connections = new Map<number, HubConnection>()
  const state: PrimaryState = {
    memory,
    hub,
    connections,
    sawWorker: hasWorkers(),
    standaloneChecked: false,
  }
  primary = state
  const drop = (worker: Worker) => {
    const connection = connections.get(worker.id)
    if (!connection) return
    connections.delete(worker.id)
    void connection.close()
  }
  cluster.on('fork', () => (state.sawWorker = true))
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

function hasWorkers(): boolean {
  return Object.keys(cluster.workers ?? {}).length > 0
}

/**
 * The first grant in a primary that has forked no worker: unless one is forked within the
 * grace, say once that only this process takes part.
 */
function checkStandalone(state: PrimaryState): void {
  if (state.sawWorker || state.standaloneChecked) return
  state.standaloneChecked = true
  const timer = setTimeout(() => {
    if (state.sawWorker || hasWorkers()) return
    process.emitWarning(
      `clusterBackend() granted a term in process ${process.pid}, which is not a node:cluster worker and has forked none: only this process takes part in its elections. Separate processes (two \`node app.js\`, PM2 fork mode, containers) each get a hub of their own, and each elects itself. ${SHARED_BACKENDS} A node:cluster primary that campaigns itself should fork its workers first.`,
      { type: 'ConclaveWarning', code: STANDALONE_WARNING_CODE },
    )
  }, STANDALONE_GRACE_MS)
  timer.unref()
}

/**
 * The cluster backend for this process: in the primary, direct access to the shared state
 * (and the hub is installed); in a worker, a relay to the primary over IPC. Each call returns
 * a new handle; its `close()` (after its `onClose` hooks) ends only what was done through it.
 * Throws `ERR_CONCLAVE_PM2` under PM2 (see `pm2Mode`), where the processes are not the
 * workers of one primary.
 */
export function clusterBackend(options: ClusterBackendOptions = {}): Backend {
  renamedOption(options, 'requestTimeoutMs', 'timeoutMs')
  checkOptions(options, ['timeoutMs', 'clock', 'onError', 'allowPm2'], 'cluster backend')
  const timeoutMs = optionalMilliseconds('timeoutMs', options.timeoutMs, 5_000, 1)
  if (options.allowPm2 !== undefined && typeof options.allowPm2 !== 'boolean') {
    throw new OptionsError('allowPm2', options.allowPm2, 'allowPm2 must be true or false.')
  }
  if (cluster.isPrimary) {
    serveCluster(options)
    const state = primary!
    const handle = state.memory.handle('cluster')
    return forwardingBackend(handle, {
      async acquire(request) {
        const result = await handle.acquire(request)
        if (result.acquired) checkStandalone(state)
        return result
      },
    })
  }
  checkPm2(options)
  if (typeof process.send !== 'function') {
    throw new NoIpcError()
  }
  return new RemoteBackend(processTransport(), {
    name: 'cluster',
    requestTimeoutMs: timeoutMs,
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
