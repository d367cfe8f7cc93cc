// A 3-member etcd cluster and one member's fault at a time: SIGKILL or a 10 s SIGSTOP of the
// leader, of a follower, of the member the holder talks to (first in its hosts), and a member's
// restart. With a 5 s lease the holder keeps its one term through each, a second candidate never
// holds, and tokens grow after a handover. Each case prints its longest renewal gap.
// Two clusters, one fault at a time on each: the cases are split over them in two lanes, so two
// faults (on different clusters) are under way at once; each case has its own candidates and
// resource, and puts its cluster back (resumed, restarted, healthy) before the next one there.
import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, type ExpectStatic, it } from 'vitest'
import { etcdBackend, type EtcdBackend } from '../../src/backends/etcd/index.js'
import { Election } from '../../src/election.js'
import { startEtcdCluster, type EtcdCluster, type EtcdClusterMember } from '../../testkit/index.js'
import { lanes } from '../helpers/lanes.js'
import { sleep } from './helpers.js'

const lease = 5_000
/**
 * How long a fault lasts: two leases, so the term lives only by renewing elsewhere. (A 6 s
 * SIGSTOP of the leader, ending about a second after a lease, may cost the holder its term at the
 * resume when the old leader revokes its lease, an etcd bug: see the last case.)
 */
const FAULT_MS = 10_000
const prefix = `etcd-cluster-${randomBytes(4).toString('hex')}/`
/** One case's cluster and what it opened (closed when the case ends). */
interface Case {
  cluster: EtcdCluster
  backends: EtcdBackend[]
  elections: Election[]
}
const clusters: EtcdCluster[] = []
const caseLanes = lanes(2)

beforeAll(async () => {
  // One after the other: each takes its free ports while the one before holds its own.
  for (let i = 0; i < 2; i++) {
    clusters.push(await startEtcdCluster())
  }
}, 120_000)
afterAll(async () => {
  await Promise.all(clusters.map((c) => c.stop()))
})

/**
 * Runs `fn` on cluster `lane` once the cases queued there before it are over, then closes its
 * candidates and puts every member of the cluster back.
 */
function onCluster(lane: number, fn: (c: Case) => Promise<void>): Promise<void> {
  return caseLanes.run(lane, async () => {
    const c: Case = { cluster: clusters[lane]!, backends: [], elections: [] }
    try {
      await fn(c)
    } finally {
      await Promise.all(c.elections.map((e) => e.close()))
      await Promise.all(c.backends.map((b) => b.close()))
      for (const m of c.cluster.members) {
        await m.server.resume()
        if (!m.server.running) await m.server.restart()
      }
      await c.cluster.waitHealthy()
    }
  })
}

/** A backend whose hosts list starts with `first` (the member it talks to first). */
function backend(c: Case, first: EtcdClusterMember): EtcdBackend {
  const hosts = [first, ...c.cluster.members.filter((m) => m !== first)].map((m) => m.endpoint)
  const b = etcdBackend({ hosts, prefix })
  c.backends.push(b)
  return b
}

function election(c: Case, b: EtcdBackend, resource: string): Election {
  const e = new Election(b, resource, { leaseMs: lease })
  e.on('error', () => {}) // faults make errors; what matters is who holds
  c.elections.push(e)
  return e
}

type Fault = 'kill' | 'pause'
type Target = 'leader' | 'follower'

/** One holder and one waiter on a resource of their own, both talking first to `first`. */
async function pair(c: Case, first: EtcdClusterMember, label: string) {
  const resource = `${label}/${randomBytes(4).toString('hex')}`
  const a = election(c, backend(c, first), resource)
  const b = election(c, backend(c, first), resource)
  let lastRenewal = 0
  let worstGap = 0
  a.on('renewed', () => {
    const t = performance.now()
    if (lastRenewal) worstGap = Math.max(worstGap, t - lastRenewal)
    lastRenewal = t
  })
  const ta = await a.campaign()
  let endedAt = 0
  ta.signal.addEventListener('abort', () => (endedAt = performance.now()))
  lastRenewal = performance.now()
  let electedAt = Number.POSITIVE_INFINITY
  let holderAtGrant = false
  b.on('elected', () => {
    electedAt = performance.now()
    holderAtGrant = a.isLeader
  })
  const waiting = b.campaign()
  waiting.catch(() => {}) // closed at the end
  let twice = 0
  const sampler = setInterval(() => {
    if (a.isLeader && b.isLeader) twice++
  }, 10)
  return {
    electedAt: () => electedAt,
    holderAtGrant: () => holderAtGrant,
    a,
    b,
    ta,
    waiting,
    stop: () => clearInterval(sampler),
    twice: () => twice,
    endedAt: () => endedAt,
    worstGap: () => worstGap,
  }
}

/**
 * For each of `talksTo`, a holder `a` and a waiter `b` on their own resource, both talking first
 * to the target or to another member; then `fault` hits `target` for 10 s, two leases (a killed
 * member is restarted after it). Both pairs live through the same fault (one fault window for
 * two cases). Checks, per pair: one term throughout, b never holds, a handover's token grows.
 */
async function survives(
  c: Case,
  expect: ExpectStatic,
  fault: Fault,
  target: Target,
  talksTo: readonly ('target' | 'other')[],
) {
  const { cluster } = c
  const leader = await cluster.leader()
  const followers = cluster.members.filter((m) => m !== leader)
  const hit = target === 'leader' ? leader : followers[0]!
  const pairs = await Promise.all(
    talksTo.map(async (to) => {
      const first = to === 'target' ? hit : followers.find((m) => m !== hit)!
      return { to, ...(await pair(c, first, `${fault}-${target}-${to}`)) }
    }),
  )
  await sleep(lease / 2)
  const faultAt = performance.now()
  if (fault === 'kill') await hit.server.kill()
  else await hit.server.pause()
  try {
    await sleep(FAULT_MS)
  } finally {
    if (fault === 'kill') await hit.server.restart()
    else await hit.server.resume()
  }
  await sleep(lease) // and a lease after it is over
  for (const p of pairs) p.stop()
  for (const p of pairs) {
    console.log(
      `etcd cluster: ${fault} ${target} (holder talks to ${p.to === 'target' ? 'it' : 'another'}): ` +
        `term ${p.ta.active ? 'kept' : `lost ${Math.round(p.endedAt() - faultAt)} ms after the fault`}, ` +
        `longest renewal gap ${Math.round(p.worstGap())} ms`,
    )
  }
  // A leader paused past the lease may revoke the holder's live lease when it resumes (etcd
  // before 3.4.31, see the last case): then the holder must have stepped down before the
  // waiter's grant. Any other fault keeps the term.
  const mayRevoke = fault === 'pause' && target === 'leader'
  for (const p of pairs) {
    const where = `holder talking to ${p.to === 'target' ? 'the target' : 'another member'}`
    expect(p.twice(), where).toBe(0)
    expect(p.holderAtGrant(), where).toBe(false)
    if (mayRevoke && !p.ta.active) {
      expect(p.endedAt(), where).toBeLessThan(p.electedAt())
      continue
    }
    expect(p.b.isLeader, where).toBe(false)
    expect(p.ta.active, where).toBe(true)
    expect(p.a.isLeader, where).toBe(true)
  }
  // A handover still gives a larger token.
  for (const p of pairs) {
    if (p.ta.active) await p.ta.resign()
    const tb = await p.waiting
    expect(tb.token).toBeGreaterThan(p.ta.token)
  }
}

// The two SIGSTOP cases of one member share one fault window: a pair talking to the paused
// member and a pair talking to another one live through the same 10 s pause.
// Timeouts: the cases queued before it on its cluster, then its own.
describe.concurrent('one fault at a time per cluster, two clusters side by side', () => {
  it(
    'keeps the term through a SIGKILL of the leader it talks to',
    ({ expect }) => onCluster(0, (c) => survives(c, expect, 'kill', 'leader', ['target'])),
    150_000,
  )
  it(
    'keeps the term through a 10 s SIGSTOP of the leader, talking to it and talking to a follower (or, if the resumed leader revokes the lease, steps down before the waiter is granted)',
    ({ expect }) =>
      onCluster(1, (c) => survives(c, expect, 'pause', 'leader', ['target', 'other'])),
    150_000,
  )
  it(
    'keeps the term through a SIGKILL of the follower it talks to',
    ({ expect }) => onCluster(1, (c) => survives(c, expect, 'kill', 'follower', ['target'])),
    150_000,
  )
  it(
    'keeps the term through a 10 s SIGSTOP of a follower, talking to it and not talking to it',
    ({ expect }) =>
      onCluster(0, (c) => survives(c, expect, 'pause', 'follower', ['target', 'other'])),
    150_000,
  )

  it(
    'a candidate talking to a restarted member campaigns on; the holder keeps its term',
    ({ expect }) =>
      onCluster(0, async (c) => {
        const { cluster } = c
        const leader = await cluster.leader()
        const follower = cluster.members.find((m) => m !== leader)!
        const resource = `restart/${randomBytes(4).toString('hex')}`
        const a = election(c, backend(c, follower), resource)
        const ta = await a.campaign()
        await follower.server.restart()
        await cluster.waitHealthy()
        const b = election(c, backend(c, follower), resource)
        const waiting = b.campaign()
        waiting.catch(() => {}) // awaited below
        await sleep(lease)
        expect(ta.active).toBe(true)
        expect(b.isLeader).toBe(false)
        await ta.resign()
        expect((await waiting).token).toBeGreaterThan(ta.token)
      }),
    150_000,
  )

  it(
    'never two holders through a SIGSTOP of the leader that ends a second after the lease',
    ({ expect }) =>
      onCluster(1, async (c) => {
        // On etcd before 3.4.31 and 3.5.13 (the test servers run 3.4.23), the old leader,
        // resuming with the holder's lease expired on its own clock, may revoke that live lease
        // (etcd #15247): the holder's key goes mid-term. Then the holder must step down on that
        // change, before the waiter's grant, which comes a round trip after it; else the term
        // is kept.
        const { cluster } = c
        const leader = await cluster.leader()
        const first = cluster.members.find((m) => m !== leader)!
        const resource = `pause-past-lease/${randomBytes(4).toString('hex')}`
        const a = election(c, backend(c, first), resource)
        const b = election(c, backend(c, first), resource)
        const ta = await a.campaign()
        let endedAt = Number.POSITIVE_INFINITY
        let electedAt = Number.POSITIVE_INFINITY
        let holderAtGrant = false
        ta.signal.addEventListener('abort', () => (endedAt = performance.now()))
        b.on('elected', () => {
          electedAt = performance.now()
          holderAtGrant = a.isLeader
        })
        const waiting = b.campaign()
        waiting.catch(() => {}) // closed at the end
        await sleep(lease / 2)
        await leader.server.pause()
        try {
          await sleep(lease + 1_000)
        } finally {
          await leader.server.resume()
        }
        await sleep(lease)
        console.log(
          `etcd cluster: leader paused ${lease + 1_000} ms: term ${ta.active ? 'kept' : 'lost at the resume'}`,
        )
        expect(holderAtGrant).toBe(false)
        if (ta.active) {
          expect(b.isLeader).toBe(false)
          await ta.resign()
        } else {
          expect(endedAt).toBeLessThan(electedAt)
        }
        const tb = await waiting
        expect(tb.token).toBeGreaterThan(ta.token)
      }),
    150_000,
  )
})
