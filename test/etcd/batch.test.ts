// The etcd backend's batches: asks (and deletes) of one turn on different resources go out as
// one transaction of nested ones, each with its own compares, so each keeps its token (the key's
// create revision), its place in line and its refusal.
import { randomBytes } from 'node:crypto'
import { Etcd3 } from 'etcd3'
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest'
import type { EtcdBackend } from '../../src/backends/etcd/index.js'
import { startEtcd, type EtcdServer } from '../../testkit/index.js'
import { backendWithClient, difference, grpcReceived } from './helpers.js'

let server: EtcdServer
let raw: Etcd3
const prefix = `etcd-batch-${randomBytes(4).toString('hex')}/`
const backends: EtcdBackend[] = []

const resource = (label: string) => `${label}/${randomBytes(4).toString('hex')}`
const backend = () => {
  const b = backendWithClient(server.endpoint, prefix)
  backends.push(b)
  return b
}
/** The create revision of a candidate's key, straight from etcd (undefined: no key). */
const createRevision = async (res: string, candidate: string) => {
  const kvs = (await raw.getAll().prefix(`${prefix}${res}#${candidate}`).exec()).kvs
  return kvs.length ? Number(kvs[0]!.create_revision) : undefined
}

beforeAll(async () => {
  server = await startEtcd()
  raw = new Etcd3({ hosts: server.endpoint })
})
afterEach(async () => {
  await Promise.all(backends.splice(0).map((b) => b.close()))
})
afterAll(async () => {
  raw?.close()
  await server?.stop()
})

it('grants asks of one turn on 60 resources in one transaction, each token its key’s create revision', async () => {
  const b = backend()
  // The lease first, so only the asks are counted.
  const warm = resource('warm')
  await b.acquire({ resource: warm, candidate: 'w', tickets: 1, leaseMs: 5_000, metadata: null })
  const resources = Array.from({ length: 60 }, () => resource('many'))
  const before = await grpcReceived(server.endpoint)
  const results = await Promise.all(
    resources.map((res) =>
      b.acquire({ resource: res, candidate: 'c', tickets: 1, leaseMs: 5_000, metadata: { res } }),
    ),
  )
  const calls = difference(await grpcReceived(server.endpoint), before)
  expect(calls.Txn ?? 0).toBeLessThanOrEqual(2)
  for (const [i, result] of results.entries()) {
    expect(result.acquired).toBe(true)
    if (!result.acquired) continue
    expect(result.token).toBe(await createRevision(resources[i]!, 'c'))
    expect(result.holders).toEqual([
      expect.objectContaining({
        candidate: 'c',
        token: result.token,
        metadata: { res: resources[i] },
      }),
    ])
  }
  // Released together too (one transaction of deletes), each by its own token.
  const beforeRelease = await grpcReceived(server.endpoint)
  await Promise.all(
    results.map((result, i) =>
      b.release({
        resource: resources[i]!,
        candidate: 'c',
        token: result.acquired ? result.token : 0,
      }),
    ),
  )
  const released = difference(await grpcReceived(server.endpoint), beforeRelease)
  expect(released.Txn ?? 0).toBeLessThanOrEqual(2)
  for (const res of resources) expect(await createRevision(res, 'c')).toBeUndefined()
})

it('keeps first come, first served and larger tokens for two asks of one resource in one turn', async () => {
  const b = backend()
  const res = resource('line')
  const others = Array.from({ length: 5 }, () => resource('other'))
  const ask = (r: string, candidate: string) =>
    b.acquire({ resource: r, candidate, tickets: 1, leaseMs: 5_000, metadata: null })
  // `a` asks before `b` on the same resource, in the same turn as asks on other resources.
  const [first, second, ...rest] = await Promise.all([
    ask(res, 'a'),
    ask(res, 'b'),
    ...others.map((r) => ask(r, 'x')),
  ])
  expect(rest.every((r) => r.acquired)).toBe(true)
  expect(first.acquired).toBe(true)
  expect(second.acquired).toBe(false)
  if (!first.acquired || second.acquired) return
  expect(second.ahead).toBe(0)
  expect(second.holders.map((h) => [h.candidate, h.token])).toEqual([['a', first.token]])
  const tokenA = first.token
  const placeB = (await createRevision(res, 'b'))!
  expect(placeB).toBeGreaterThan(tokenA)
  // `a` releases in the same turn as `x` on the others; `b` is then granted its own place's
  // create revision as its token.
  await Promise.all([
    b.release({ resource: res, candidate: 'a', token: tokenA }),
    ...others.map((r) => b.release({ resource: r, candidate: 'x' })),
  ])
  const again = await ask(res, 'b')
  expect(again.acquired).toBe(true)
  if (!again.acquired) return
  expect(again.token).toBe(placeB)
  expect(again.token).toBeGreaterThan(tokenA)
  // A grant of a resource released in that batch gets a larger token than the one before.
  const regrant = await ask(others[0]!, 'y')
  const old = rest[0]!
  expect(regrant.acquired && old.acquired && regrant.token > old.token).toBe(true)
})
