// The etcd backend and the contract of issue 11: close() runs the onClose hooks before it revokes
// anything, a resource's tickets are fixed while its grants live, a new term never gets an old
// token, and errors that say what went wrong.
import { randomBytes } from 'node:crypto'
import { Etcd3 } from 'etcd3'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { AcquireRequest } from '../../src/backend.js'
import { type EtcdBackend } from '../../src/backends/etcd.js'
import { Election } from '../../src/election.js'
import { BackendClosedError } from '../../src/errors.js'
import { startEtcd, type EtcdServer } from '../servers/index.js'
import { backendWithClient, queuedKeys, sleep, until } from './helpers.js'

let server: EtcdServer
let raw: Etcd3
const prefix = `etcd-contract-${randomBytes(4).toString('hex')}/`
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
const req = (res: string, candidate: string, tickets = 1, leaseMs = 2_000): AcquireRequest => ({
  resource: res,
  candidate,
  tickets,
  leaseMs,
  metadata: null,
})

beforeAll(async () => {
  server = await startEtcd()
  raw = new Etcd3({ hosts: server.endpoint })
})
afterEach(async () => {
  await Promise.all(elections.splice(0).map((e) => e.close()))
  await Promise.all(backends.splice(0).map((b) => b.close()))
  expect(errors.splice(0).map((e) => e.message)).toEqual([])
})
afterAll(async () => {
  raw?.close()
  await server?.stop()
})

describe('close', () => {
  it('awaits every onClose hook while calls still work, then refuses every call as closed', async () => {
    const b = backend()
    const res = resource('hooks')
    const got = await b.acquire(req(res, 'h'))
    if (!got.acquired) throw new Error('expected a grant')
    const order: string[] = []
    let letGo!: () => void
    const held = new Promise<void>((resolve) => (letGo = resolve))
    b.onClose(async () => {
      order.push('hook')
      await held
      // The lease is not revoked yet: the key is there and the backend still answers.
      expect((await b.holders(res)).map((h) => h.token)).toEqual([got.token])
      await b.release({ resource: res, candidate: 'h', token: got.token })
      order.push('released')
    })
    const removed = b.onClose(async () => void order.push('a removed hook ran'))
    removed()
    b.onClose(async () => {
      throw new Error('a failing hook does not keep the backend open')
    })
    let closed = false
    const closing = b.close()
    void closing.then(() => (closed = true))
    await sleep(100)
    expect(closed).toBe(false) // still waiting for the first hook
    expect(order).toEqual(['hook'])
    letGo()
    await closing
    expect(order).toEqual(['hook', 'released'])
    expect(await queuedKeys(raw, prefix, res)).toEqual([])

    const calls: [string, () => Promise<unknown>][] = [
      ['acquire', () => b.acquire(req(res, 'h'))],
      [
        'renew',
        () => b.renew([{ resource: res, candidate: 'h', token: got.token, leaseMs: 2_000 }]),
      ],
      ['release', () => b.release({ resource: res, candidate: 'h' })],
      ['holders', () => b.holders(res)],
      ['watch', () => b.watch(res, () => {})],
    ]
    for (const [name, call] of calls) {
      const error = await call().then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(error, name).toBeInstanceOf(BackendClosedError)
      expect(error, name).toMatchObject({ code: 'ERR_CONCLAVE_CLOSED' })
    }
  })

  it('lets a holder end its term and hand over before its lease is revoked', async () => {
    const res = resource('handover')
    const lease = 2_000
    const first = backend()
    const a = election(first, res, lease)
    const b = election(backend(), res, lease)
    // What the election core registers for each backend it campaigns through (registering it
    // twice is harmless: close() is idempotent).
    first.onClose(() => a.close())
    const ta = await a.campaign()
    let aEndedAt: number | undefined
    ta.signal.addEventListener('abort', () => (aEndedAt = performance.now()))
    let bElectedAt: number | undefined
    const bTerm = b.campaign().then((term) => ((bElectedAt = performance.now()), term))
    await until(async () => (await queuedKeys(raw, prefix, res)).length === 2, 5_000, 'B queued')

    await first.close()
    expect(ta.endReason).toBe('closed')
    expect(aEndedAt).toBeDefined()
    const tb = await bTerm
    // B won only after A's term was over: never two holders.
    expect(bElectedAt!).toBeGreaterThanOrEqual(aEndedAt!)
    expect(tb.token).toBeGreaterThan(ta.token)
  })
})
