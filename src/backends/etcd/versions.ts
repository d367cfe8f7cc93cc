/**
 * etcd releases whose leases are unsafe across a leader change. Before 3.4.31 and 3.5.13, an old
 * leader that was stuck past a lease (a SIGSTOP, a long fsync or GC stall) revokes, when it
 * resumes, the leases it thinks expired (etcd issue #15247): a live holder's key vanishes
 * mid-term and the next candidate in line is granted. The holder ends its term on the same watch
 * event (WatchChange.ended), a round trip before that grant, but the two processes hear the event
 * on different watch streams, so an overlap of a moment is possible. Before 3.4.32 and 3.5.14,
 * LeaseTimeToLive answered by such an old leader is stale. conclave cannot repair a server that
 * deletes a live key, so the backend says so: it reads the version of the member it talks to, and
 * the cluster's size, once (at its first acquire), and warns once per endpoint when a cluster of
 * several members runs an affected release. A single member has no leader change to fear.
 */
import type { Etcd3, Namespace } from 'etcd3'
import { ETCD_VERSION_WARNING } from '../../errors.js'
import { timeoutError, withDeadline } from '../kit.js'

/** Endpoints already warned about, so a process says it once per endpoint. */
const warned = new Set<string>()

/** The first release of each line with both fixes (revocation: 3.4.31, 3.5.13; TTL: one later). */
const FIXED: Record<string, number> = { '3.4': 32, '3.5': 14 }

/** True when an etcd `version` (e.g. "3.4.23") has the lease bugs of a leader change. */
export function unsafeLeases(version: string): boolean {
  const match = /^(\d+)\.(\d+)\.(\d+)/.exec(version)
  if (!match) return false // not ours to guess
  const [major, minor, patch] = match.slice(1).map(Number) as [number, number, number]
  if (major !== 3) return major < 3
  if (minor < 4) return true
  const fixed = FIXED[`${major}.${minor}`]
  return fixed !== undefined && patch < fixed
}

/**
 * Reads the version and the member list through `client` (skipped for a namespaced client,
 * which offers neither) and warns (ConclaveWarning CONCLAVE_ETCD_VERSION) when a cluster of
 * several members runs an affected release. Resolves true once the question is settled.
 */
export async function checkVersion(
  client: Namespace,
  where: string,
  timeoutMs: number,
): Promise<boolean> {
  const admin = client as Partial<Etcd3>
  if (!admin.maintenance || !admin.cluster) return true
  let version: string
  let members: number
  try {
    const deadline = new Date(Date.now() + timeoutMs)
    const [status, list] = await withDeadline(
      Promise.all([
        admin.maintenance.status({ deadline }),
        admin.cluster.memberList({}, { deadline }),
      ]),
      timeoutMs + 50,
      () => timeoutError(where, 'version check', timeoutMs),
    )
    version = status.version
    members = list.members.length
  } catch {
    return false // no answer now: asked again at the next acquire
  }
  if (members < 2 || !unsafeLeases(version) || warned.has(where)) return true
  warned.add(where)
  process.emitWarning(
    `The etcd cluster at ${where} (${members} members) runs etcd ${version}, whose leases are unsafe across a leader change: an old leader that was stuck past a lease revokes live leases when it resumes (etcd issue #15247, fixed in 3.4.31 and 3.5.13), so a holder's grant can vanish mid-term, and its lease TTL answers can be stale (fixed in 3.4.32 and 3.5.14). conclave ends the holder's term on the same change, but a waiter may be granted within a moment of it. Upgrade etcd to 3.4.32, 3.5.14 or later; see docs/etcd.md.`,
    { type: 'ConclaveWarning', code: ETCD_VERSION_WARNING },
  )
  return true
}
