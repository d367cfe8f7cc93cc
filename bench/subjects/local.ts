/**
 * conclave/local as a subject: its hub is a separate process (testkit/local-peer.ts) started
 * before the candidates, so the bench's candidates are clients over the unix socket; holders
 * are forked processes (bench/holder.ts) of the same app, and a holder's crash is seen by the
 * hub when its socket closes. `startHub` starts a fresh app with a hub process of its own, for
 * the hub-crash scenario.
 */
import { localBackend } from '../../src/backends/local/index.js'
import { startLocalPeer } from '../../testkit/local.js'
import {
  type HoldInChild,
  processCpuMs,
  spawnHolder,
  spawnWaiters,
  type WaitersConfig,
} from '../probes.js'
import type { Subject } from '../scenarios.js'
import { conclaveSubject, holderId, holdWithElection } from './conclave.js'

/** In the bench process: conclave on localBackend, the apps in `dir`. */
export async function localSubject(dir: string): Promise<Subject> {
  let app = 0
  const hubs: { pid: number; kill(): Promise<void> }[] = []
  const startHub = async () => {
    const peer = await startLocalPeer({ name: `bench-${++app}`, dir })
    hubs.push(peer)
    return peer
  }
  await startHub()
  return conclaveSubject({
    name: 'conclave/local',
    open() {
      const backend = localBackend({ name: `bench-${app}`, dir })
      return { backend, close: () => backend.close() }
    },
    spawnHolder: (resource, leaseMs) =>
      spawnHolder('local', {
        subject: 'conclave/local',
        resource,
        leaseMs,
        id: holderId(),
        name: `bench-${app}`,
        dir,
      }),
    spawnWaiters: (resource, count, leaseMs, startInFlight) =>
      spawnWaiters('local', {
        subject: 'conclave/local',
        resource,
        leaseMs,
        count,
        startInFlight,
        name: `bench-${app}`,
        dir,
      }),
    startHub,
    serverCpuMs: async () => processCpuMs(hubs.at(-1)!.pid),
    cannot: {
      takeover:
        "the hub drops a dead holder's grants when its socket closes: no expiry to wait for",
      partition: 'no network path: one host, a unix socket',
    },
    close: async () => void (await Promise.all(hubs.map((h) => h.kill()))),
  })
}

/** In a holder process: an Election on localBackend, joining the app the bench names. */
export const holdInChild: HoldInChild = (config, onLost) =>
  holdWithElection(
    localBackend({ name: String(config.name), dir: String(config.dir) }),
    config,
    onLost,
  )

/** In a waiter process: the backend its candidates share, joining the app the bench names. */
export const waitersBackend = (config: WaitersConfig) =>
  localBackend({ name: String(config.name), dir: String(config.dir) })
