// The etcd backend's line beyond the conformance suite: what many waiters and many campaigns cost
// etcd, counted in the gRPC messages it received (never timed): a release wakes only the next
// waiter, idle waiters send nothing but their process's keepalive, and thousands of campaigns
// started at once on one backend all win.
import { randomBytes } from 'node:crypto'
import { Etcd3 } from 'etcd3'
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest'
import type { EtcdBackend } from '../../src/backends/etcd/index.js'
import { Election } from '../../src/election.js'
import type { Term } from '../../src/term.js'
import { startEtcd, type EtcdServer } from '../../testkit/index.js'
import { backendWithClient, difference, grpcReceived, sleep, until } from './helpers.js'

let server: EtcdServer
const prefix = `etcd-line-${randomBytes(4).toString('hex')}/`
const backends: EtcdBackend[] = []
const elections: Election[] = []
const errors: Error[] = []

const resource = (label: string) => `${label}/${randomBytes(4).toString('hex')}`
const backend = () => {
  const b = backendWithClient(server.endpoint, prefix)
  backends.push(b)
  return b
}
const election = (b: EtcdBackend, res: string, leaseMs: number) => {
  const e = new Election(b, res, { leaseMs })
  e.on('error', (error) => errors.push(error))
  elections.push(e)
  return e
}
const total = (counts: Record<string, number>) => Object.values(counts).reduce((a, b) => a + b, 0)

beforeAll(async () => {
  server = await startEtcd()
})
afterEach(async () => {
  await Promise.all(elections.splice(0).map((e) => e.close()))
  await Promise.all(backends.splice(0).map((b) => b.close()))
  expect(errors.splice(0).map((e) => e.message)).toEqual([])
})
afterAll(() => server?.stop())

/** `n` campaigns waiting in line behind a holder, on two backends (two processes' worth). */
async function line(res: string, n: number, leaseMs: number) {
  const holder = election(backend(), res, leaseMs)
  const first = await holder.campaign()
  const shared = [backend(), backend()]
  const waiters = Array.from({ length: n }, (_, i) => election(shared[i % 2]!, res, leaseMs))
  const won: Election[] = []
  const terms = new Map<Election, Promise<Term>>()
  for (const e of waiters) {
    const waiting = new Promise((resolve) => e.once('waiting', resolve))
    const term = e.campaign()
    term.then(
      () => won.push(e),
      () => {},
    )
    terms.set(e, term)
    await waiting
  }
  return { first, waiters, won, terms }
}

it('wakes only the next waiter on a release: the handoff is the release and one grant', async () => {
  const lease = 3_000
  const res = resource('herd')
  const { first, waiters, won, terms } = await line(res, 40, lease)
  await sleep(300) // past the waiters' second asks
  const before = await grpcReceived(server.endpoint)
  await first.resign()
  await until(() => won.length === 1, 10_000, 'the next waiter to win')
  expect(won).toEqual([waiters[0]])
  await sleep(300) // room for a herd to show
  const delta = difference(await grpcReceived(server.endpoint), before)
  // The release's delete (granting the winner in the same transaction; else the winner's own
  // put): no other waiter asked again.
  expect(delta.Txn ?? 0).toBeLessThanOrEqual(2)
  expect(delta.Range ?? 0).toBeLessThanOrEqual(2)
  // And the line still goes in order.
  await (await terms.get(waiters[0]!)!).resign()
  await until(() => won.length === 2, 10_000, 'the second waiter to win')
  expect(won).toEqual([waiters[0], waiters[1]])
})

it('hands the ticket on in the release: the next waiter holds with no ask, at the delete’s revision', async () => {
  const lease = 5_000
  const res = resource('hand-on')
  const { first, waiters, won, terms } = await line(res, 3, lease)
  await sleep(300) // past the waiters' second asks; the holder's copy shows them
  const admin = new Etcd3({ hosts: server.endpoint })
  try {
    const before = await grpcReceived(server.endpoint)
    await first.resign()
    await until(() => won.length === 1, 10_000, 'the next waiter to win')
    expect(won).toEqual([waiters[0]])
    const delta = difference(await grpcReceived(server.endpoint), before)
    // The release's one transaction granted the waiter; it sent no put, no read of its own.
    expect(delta.Txn ?? 0).toBe(1)
    expect(delta.Range ?? 0).toBe(0)
    const term = await terms.get(waiters[0]!)!
    const keys = await admin.getAll().prefix(`${prefix}${res}#`).sort('Create', 'Ascend').exec()
    // The winner's key: its own create revision (the token), rewritten at the release's revision.
    const mine = keys.kvs.find((kv) => Number(kv.create_revision) === term.token)!
    expect(mine).toBeDefined()
    expect((JSON.parse(mine.value.toString()) as { waiting?: boolean }).waiting).toBeUndefined()
    expect(Number(mine.mod_revision)).toBe(Number(keys.header.revision))
    expect(term.active).toBe(true)
    // It renews as any grant, and the line still goes in order.
    await sleep(lease / 2)
    expect(term.active).toBe(true)
    await term.resign()
    await until(() => won.length === 2, 10_000, 'the second waiter to win')
    expect(won).toEqual([waiters[0], waiters[1]])
  } finally {
    admin.close()
  }
})

it('keeps idle waiters in line with their process’s keepalive alone: no asks, no reads', async () => {
  const lease = 3_000 // renewMs 1000
  const res = resource('idle')
  await line(res, 40, lease)
  await sleep(500)
  const before = await grpcReceived(server.endpoint)
  await sleep(2 * lease) // several renewal ticks, past every waiter's own lease
  const delta = difference(await grpcReceived(server.endpoint), before)
  expect(delta.Txn ?? 0).toBe(0)
  // Only the next in line asks again (a read), when the holder's grant could expire: about once
  // a lease; the 39 behind it ask nothing.
  expect(delta.Range ?? 0).toBeLessThanOrEqual(6)
  // One keepalive per backend per tick (3 backends, ~6 ticks), not one per waiter.
  expect(delta.LeaseKeepAlive ?? 0).toBeLessThanOrEqual(30)
})

it('grants 500 campaigns started at once on one backend, then goes quiet once they close', async () => {
  // A long lease: on a loaded machine the last of them may wait a while for their turn.
  const lease = 30_000
  const b = backend()
  const base = resource('many')
  const many = Array.from({ length: 500 }, (_, i) => election(b, `${base}/${i}`, lease))
  const terms = await Promise.all(many.map((e) => e.campaign()))
  expect(terms.every((t) => t.active)).toBe(true)
  expect(many.every((e) => e.isLeader)).toBe(true)
  await Promise.all(elections.splice(0).map((e) => e.close()))
  expect(errors.splice(0).map((e) => e.message)).toEqual([])
  await sleep(500)
  const before = await grpcReceived(server.endpoint)
  await sleep(1_500)
  // Nothing held, nothing waiting: no renewals, no asks (the watch stream sends nothing).
  expect(total(difference(await grpcReceived(server.endpoint), before))).toBe(0)
}, 120_000)
