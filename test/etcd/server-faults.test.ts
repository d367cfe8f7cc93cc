// Real faults between the etcd backend and its server: etcd frozen (SIGSTOP) past the lease,
// etcd killed and restarted with its data, and the client's path black-holed by the proxy.
import { randomBytes } from 'node:crypto'
import { Etcd3 } from 'etcd3'
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest'
import { etcdBackend, type EtcdBackend } from '../../src/backends/etcd/index.js'
import { Election } from '../../src/election.js'
import type { TermEndReason } from '../../src/errors.js'
import type { Term } from '../../src/term.js'
import { startProxy, type FaultProxy } from '../../testkit/proxy.js'
import { startEtcd, type EtcdServer } from '../../testkit/index.js'
import { backendWithClient, queuedKeys, sleep, until } from './helpers.js'

let server: EtcdServer
const prefix = `etcd-faults-${randomBytes(4).toString('hex')}/`
const backends: EtcdBackend[] = []
const elections: Election[] = []
const proxies: FaultProxy[] = []
const lease = 2_000

const resource = (label: string) => `${label}/${randomBytes(4).toString('hex')}`
const backend = () => {
  const b = backendWithClient(server.endpoint, prefix)
  backends.push(b)
  return b
}
const election = (b: EtcdBackend, res: string) => {
  const e = new Election(b, res, { leaseMs: lease })
  e.on('error', () => {}) // faults make errors here; what matters is who holds
  elections.push(e)
  return e
}

/** Runs `e` and records each term with when it began and ended (as the holder saw it). */
function record(e: Election) {
  const terms: { term: Term; startedAt: number; endedAt?: number; reason?: TermEndReason }[] = []
  void e.run(async (term) => {
    const entry: (typeof terms)[number] = { term, startedAt: performance.now() }
    terms.push(entry)
    await new Promise<void>((resolve) =>
      term.signal.addEventListener('abort', () => {
        entry.endedAt = performance.now()
        entry.reason = term.endReason
        resolve()
      }),
    )
  })
  return terms
}

/** Samples the candidates every 10 ms and fails if two believe they hold at once. */
function neverTwo(candidates: Election[]) {
  let worst = 0
  const timer = setInterval(() => {
    worst = Math.max(worst, candidates.filter((c) => c.isLeader).length)
  }, 10)
  return () => {
    clearInterval(timer)
    return worst
  }
}

beforeAll(async () => {
  server = await startEtcd()
})
afterEach(async () => {
  if (server.running === false) await server.restart()
  await Promise.all(elections.splice(0).map((e) => e.close()))
  await Promise.all(backends.splice(0).map((b) => b.close()))
  await Promise.all(proxies.splice(0).map((p) => p.close()))
})
afterAll(async () => {
  await server?.stop()
})

it('ends the holder’s term while etcd is frozen past the lease, with never a second holder', async () => {
  const res = resource('sigstop')
  const a = election(backend(), res)
  const b = election(backend(), res)
  const ta = await a.campaign()
  let endedAt = 0
  ta.signal.addEventListener('abort', () => (endedAt = performance.now()))
  let grantedAt = 0
  const waiting = b.campaign().then((t) => ((grantedAt = performance.now()), t))
  waiting.catch(() => {}) // awaited below; closed early only if the test fails
  await sleep(lease / 2)
  const stop = neverTwo([a, b])

  await server.pause()
  try {
    const pausedAt = performance.now()
    await until(() => endedAt > 0, 2 * lease, 'the term to end')
    expect(ta.endReason).toBe('expired')
    // Its last renewal was sent before the freeze: the term ends within one lease of it.
    expect(endedAt - pausedAt).toBeLessThan(lease)
    expect(b.isLeader).toBe(false)
    await sleep(lease) // etcd stays frozen well past the lease
    expect(b.isLeader).toBe(false)
  } finally {
    await server.resume()
  }

  const tb = await waiting
  expect(grantedAt).toBeGreaterThan(endedAt)
  expect(tb.token).toBeGreaterThan(ta.token)
  await sleep(lease)
  expect(stop()).toBe(1)
  expect((await b.leaders()).map((h) => h.candidate)).toEqual([b.id])
})

it('recovers after etcd is killed and restarted with its data, tokens still growing', async () => {
  const res = resource('restart')
  // Its own client (no etcd3 circuit breaker): it is back as soon as etcd is, while its old key,
  // on a lease etcd restored, may still be there. The token must grow all the same.
  const owned = etcdBackend({ hosts: server.endpoint, prefix })
  backends.push(owned)
  const a = election(owned, res)
  const terms = record(a)
  await until(() => terms.length === 1, 5_000, 'a first term')

  await server.kill()
  // Down until the term ends by its deadline; back at once, while renewals that failed in the
  // meantime were sent less than a lease ago.
  await until(() => terms[0]!.endedAt !== undefined, 2 * lease, 'the term to end')
  expect(a.isLeader).toBe(false)
  await server.restart()

  await until(() => terms.length === 2 && a.isLeader, 10 * lease, 'a term after the restart')
  expect(terms[0]!.reason).toBe('expired')
  expect(terms[1]!.term.token).toBeGreaterThan(terms[0]!.term.token)
  // Renewals work again: the term lasts through several of them.
  await sleep(2 * lease)
  expect(terms[1]!.term.active).toBe(true)

  // And a newcomer after a handover gets a larger token still.
  const b = election(backend(), res)
  const waiting = b.campaign()
  waiting.catch(() => {}) // awaited below; closed early only if the test fails
  await a.close()
  const tb = await waiting
  expect(tb.token).toBeGreaterThan(terms[1]!.term.token)
})

it('steps down in time when its path to etcd is black-holed, and campaigns again after', async () => {
  const res = resource('blackhole')
  const proxy = await startProxy({ targetPort: server.port })
  proxies.push(proxy)
  // The backend makes its own client through the proxy (no etcd3 retries or circuit breaker).
  const cut = etcdBackend({ hosts: `127.0.0.1:${proxy.port}`, prefix, timeoutMs: 1_000 })
  backends.push(cut)
  const a = election(cut, res)
  const terms = record(a)
  await until(() => terms.length === 1, 5_000, 'a first term')
  const b = election(backend(), res)
  let grantedAt = 0
  const waiting = b.campaign().then((t) => ((grantedAt = performance.now()), t))
  waiting.catch(() => {}) // awaited below; closed early only if the test fails
  await sleep(lease / 2)
  const stop = neverTwo([a, b])

  proxy.cut({ mode: 'blackhole' })
  const tb = await waiting
  // A's signal fired before etcd could hand the resource to B.
  expect(terms[0]!.endedAt).toBeDefined()
  expect(terms[0]!.endedAt!).toBeLessThan(grantedAt)
  expect(terms[0]!.reason).toBe('expired')
  expect(tb.token).toBeGreaterThan(terms[0]!.term.token)

  proxy.restore()
  // A campaigns again: queued behind B, it takes over when B hands over.
  const raw = new Etcd3({ hosts: server.endpoint })
  try {
    await until(
      async () => {
        const keys = await queuedKeys(raw, prefix, res)
        return keys.join() === [b.id, a.id].map((id) => `${prefix}${res}#${id}`).join()
      },
      10 * lease,
      'a queued again behind b',
    )
  } finally {
    raw.close()
  }
  await tb.resign()
  await until(() => terms.length === 2, 5 * lease, 'a second term')
  expect(terms[1]!.term.token).toBeGreaterThan(tb.token)
  expect(stop()).toBe(1)
})
