/**
 * How the agent's two halves reach each other: the router (primary-router.ts) reaches a pool
 * of workers, and each worker (worker-link.ts) has a channel to the router. One protocol
 * (protocol.ts) over two transports: node:cluster IPC (the router in the cluster primary), and
 * the `local` backend's unix socket (the router in the process hosting the app's hub, which
 * every process of the app is connected to; src/backends/local/agent-relay.ts).
 */
import cluster, { type Worker } from 'node:cluster'
import { AgentDisconnectedError } from '../errors.js'

/** One worker as the router reaches it. */
export interface PoolWorker {
  /** Its id in the pool (node:cluster: `worker.id`; local: the hub's number for its connection). */
  readonly id: number
  readonly pid: number
  isConnected(): boolean
  /** Sends one message; `onFail` hears of a send that failed (else the router reports it). */
  send(message: object, onFail: (error: Error) => void): void
}

/** The router's side: the workers it reaches, their messages, their leaving. */
export interface WorkerPool {
  /** The connected workers, by id. */
  workers(): PoolWorker[]
  get(id: number): PoolWorker | undefined
  onMessage(listener: (worker: PoolWorker, message: unknown) => void): () => void
  /** A worker left (exited, disconnected): it will not answer any more. */
  onGone(listener: (id: number) => void): () => void
}

/** A worker's side: its channel to the router. */
export interface RouterChannel {
  readonly connected: boolean
  /** Sends one message; throws AgentDisconnectedError when there is no channel now. */
  send(message: object, onError: (error: Error) => void): void
  onMessage(listener: (message: unknown) => void): () => void
  /** The channel closed: what waits for an answer will get none. */
  onDisconnect(listener: () => void): () => void
  /** A (new) router is reachable (local: this process reached a new hub): greet it. */
  onConnect(listener: () => void): () => void
}

function poolWorker(worker: Worker): PoolWorker {
  return {
    id: worker.id,
    pid: worker.process.pid ?? 0,
    isConnected: () => worker.isConnected(),
    send(message, onFail) {
      if (!worker.isConnected()) {
        onFail(new Error(`worker ${worker.id} is not connected`))
        return
      }
      try {
        worker.send(message, undefined, (error: Error | null) => {
          if (error) onFail(error)
        })
      } catch (error) {
        onFail(error as Error)
      }
    },
  }
}

/** The cluster primary's workers (node:cluster IPC). */
export function clusterPool(): WorkerPool {
  return {
    workers: () =>
      Object.values(cluster.workers ?? {})
        .filter((w): w is Worker => w !== undefined && w.isConnected())
        .sort((a, b) => a.id - b.id)
        .map(poolWorker),
    get(id) {
      const worker = cluster.workers?.[id]
      return worker ? poolWorker(worker) : undefined
    },
    onMessage(listener) {
      const on = (worker: Worker, message: unknown) => listener(poolWorker(worker), message)
      cluster.on('message', on)
      return () => cluster.off('message', on)
    },
    onGone(listener) {
      const on = (worker: Worker) => listener(worker.id)
      cluster.on('disconnect', on)
      cluster.on('exit', on)
      return () => {
        cluster.off('disconnect', on)
        cluster.off('exit', on)
      }
    },
  }
}

/** A cluster worker's IPC channel to the primary. */
export function clusterChannel(): RouterChannel {
  return {
    get connected() {
      return process.connected
    },
    send(message, onError) {
      if (!process.connected) {
        throw new AgentDisconnectedError('The IPC channel to the primary is closed.')
      }
      process.send!(message, undefined, undefined, (error: Error | null) => {
        if (error) onError(error)
      })
    },
    onMessage(listener) {
      process.on('message', listener)
      return () => process.off('message', listener)
    },
    onDisconnect(listener) {
      process.on('disconnect', listener)
      return () => process.off('disconnect', listener)
    },
    // The IPC channel is there from the start and never comes back once closed.
    onConnect: () => () => {},
  }
}

/**
 * A backend that carries the agent itself (the `local` backend: its hub routes the agent's
 * messages between the app's processes), so every process is a worker and none is a primary.
 */
export interface AgentCarrier {
  /** This process's channel to the router for the agent of `namespace` on `resource`. */
  agentChannel(namespace: string, resource: string): RouterChannel
}

/** The backend as an AgentCarrier, if it is one. */
export function carrierOf(backend: unknown): AgentCarrier | undefined {
  return typeof (backend as Partial<AgentCarrier> | undefined)?.agentChannel === 'function'
    ? (backend as AgentCarrier)
    : undefined
}
