/**
 * conclave/cluster as a subject. Its candidates run in a cluster worker (bench/subjects/
 * cluster-host.ts forks it and runs the scenarios there), so every call crosses node:cluster
 * IPC; its holders are further workers, forked by the primary on request, and a request is one
 * backend call sent to the hub.
 */
import { clusterBackend } from '../../src/backends/cluster/index.js'
import {
  type HoldInChild,
  type HolderMessage,
  type HolderProcess,
  processCpuMs,
  within,
} from '../probes.js'
import type { Subject } from '../scenarios.js'
import { conclaveSubject, holderId, holdWithElection } from './conclave.js'

/** What the measuring worker and the primary say about holder workers. */
export type HolderRequest = {
  benchHolder: 'spawn'
  id: number
  config: Record<string, string | number>
}
/** The primary's reports on a holder worker. */
export type HolderReport =
  | { benchHolder: 'report'; id: number; pid: number; message: HolderMessage }
  | { benchHolder: 'exited'; id: number }

/** In the measuring worker: conclave on clusterBackend(), holders forked by the primary. */
export function clusterSubject(): Subject {
  let nextId = 0
  const listeners = new Map<number, (report: HolderReport) => void>()
  process.on('message', (m: HolderReport) => {
    if (m && typeof m === 'object' && 'benchHolder' in m) listeners.get(m.id)?.(m)
  })
  const spawnHolder = (resource: string, leaseMs: number): Promise<HolderProcess> => {
    const id = nextId++
    let lost: number | undefined
    let resolveExit!: () => void
    const exited = new Promise<void>((resolve) => (resolveExit = resolve))
    let gone = false
    return within(
      new Promise<HolderProcess>((resolve, reject) => {
        listeners.set(id, (report) => {
          if (report.benchHolder === 'exited') {
            gone = true
            listeners.delete(id)
            resolveExit()
            return reject(new Error('holder worker exited before it held'))
          }
          const { message, pid } = report
          if (message.type === 'lost') lost = message.at
          if (message.type === 'failed') reject(new Error(`holder failed: ${message.error}`))
          if (message.type === 'held')
            resolve({
              pid,
              async kill() {
                if (!gone) process.kill(pid, 'SIGKILL')
                await exited
              },
              lostAt: () => lost,
            })
        })
        const request: HolderRequest = {
          benchHolder: 'spawn',
          id,
          config: { subject: 'conclave/cluster', resource, leaseMs, id: holderId() },
        }
        process.send!(request)
      }),
      60_000,
      'holder worker',
    )
  }
  return conclaveSubject({
    name: 'conclave/cluster',
    open() {
      const backend = clusterBackend()
      return { backend, close: () => backend.close() }
    },
    spawnHolder,
    // The hub is the primary, this worker's parent.
    serverCpuMs: async () => processCpuMs(process.ppid),
    cannot: {
      takeover: "the hub drops a dead worker's grants at once: no expiry to wait for",
      partition: 'no network path: workers reach the hub over their IPC channel',
    },
  })
}

/** In a holder worker: an Election on clusterBackend(). */
export const holdInChild: HoldInChild = (config, onLost) =>
  holdWithElection(clusterBackend(), config, onLost)
