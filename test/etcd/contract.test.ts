// The etcd backend and the contract of issue 11: close() runs the onClose hooks before it revokes
// anything, a resource's tickets are fixed while its grants live, a new term never gets an old
// token, and errors that say what went wrong.
import { randomBytes } from 'node:crypto'
import { type AddressInfo, createServer } from 'node:net'
import { Etcd3 } from 'etcd3'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { AcquireRequest } from '../../src/backend.js'
import { backendFromUrl, etcdBackend, type EtcdBackend } from '../../src/backends/etcd/index.js'
import { Election } from '../../src/election.js'
import {
  BackendClosedError,
  BackendError,
  OptionsError,
  TicketsMismatchError,
} from '../../src/errors.js'
import { startProxy, type FaultProxy } from '../../testkit/proxy.js'
import { runWithoutPeers } from '../postgres/helpers.js'
import { freePort, startEtcd, type EtcdServer } from '../../testkit/index.js'
import { backendWithClient, queuedKeys, sleep, until } from './helpers.js'

let server: EtcdServer
let raw: Etcd3
const prefix = `etcd-contract-${randomBytes(4).toString('hex')}/`
const backends: EtcdBackend[] = []
const elections: Election[] = []
const errors: Error[] = []
const proxies: FaultProxy[] = []

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
  await Promise.all(proxies.splice(0).map((p) => p.close()))
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

describe('tickets', () => {
  const stored = async (res: string) =>
    Object.values(await raw.getAll().prefix(`${prefix}${res}#`).strings()).map(
      (v) => (JSON.parse(v) as { tickets: number }).tickets,
    )

  it('refuses a candidate asking other tickets while the grants live, and accepts any once none does', async () => {
    const res = resource('mismatch')
    const [a, b, c, d] = [backend(), backend(), backend(), backend()]
    const three = await Promise.all([a, b, c].map((x, i) => x.acquire(req(res, `c${i}`, 3))))
    expect(three.every((r) => r.acquired)).toBe(true)
    const refused = await d.acquire(req(res, 'd', 5)).catch((e: unknown) => e)
    expect(refused).toBeInstanceOf(TicketsMismatchError)
    expect(refused).toMatchObject({
      code: 'ERR_CONCLAVE_TICKETS_MISMATCH',
      resource: res,
      tickets: 5,
      held: 3,
    })
    // It left no key behind, and never held.
    expect(await queuedKeys(raw, prefix, res)).toHaveLength(3)
    expect((await d.holders(res)).map((h) => h.candidate).sort()).toEqual(['c0', 'c1', 'c2'])
    // A holder asking again with other tickets is refused too, and keeps its grant.
    await expect(a.acquire(req(res, 'c0', 1))).rejects.toMatchObject({ held: 3 })
    expect(await d.holders(res)).toHaveLength(3)
    // The same tickets queue as before; asking other tickets then withdraws the queued key.
    expect((await d.acquire(req(res, 'd', 3))).acquired).toBe(false)
    expect(await queuedKeys(raw, prefix, res)).toHaveLength(4)
    await expect(d.acquire(req(res, 'd', 4))).rejects.toMatchObject({ tickets: 4, held: 3 })
    expect(await queuedKeys(raw, prefix, res)).toHaveLength(3)

    for (const [i, x] of [a, b, c].entries()) {
      const r = three[i]!
      if (r.acquired) await x.release({ resource: res, candidate: `c${i}`, token: r.token })
    }
    expect((await d.acquire(req(res, 'd', 5))).acquired).toBe(true)
    await expect(a.acquire(req(res, 'c0', 3))).rejects.toMatchObject({ held: 5 })
    expect(await stored(res)).toEqual([5])
  })

  it('never lets candidates racing with different tickets make more holders than their tickets', async () => {
    const pool = Array.from({ length: 6 }, () => backend())
    for (let round = 0; round < 10; round++) {
      const res = resource(`race${round}`)
      // 12 candidates at once through 6 clients, asking 1 or 3 tickets, interleaved.
      const asks = Array.from({ length: 12 }, (_, i) => (i % 2 === round % 2 ? 1 : 3))
      const results = await Promise.all(
        asks.map((tickets, i) =>
          pool[i % pool.length]!.acquire(req(res, `c${i}`, tickets)).then(
            (r) => ({ tickets, r }),
            (e: unknown) => ({ tickets, e }),
          ),
        ),
      )
      const won = results.filter((x) => 'r' in x && x.r.acquired)
      const winner = won[0]!.tickets
      expect(new Set(won.map((x) => x.tickets))).toEqual(new Set([winner]))
      expect(won).toHaveLength(winner)
      for (const x of results) {
        if ('e' in x) {
          expect(x.e).toBeInstanceOf(TicketsMismatchError)
          expect(x.tickets).not.toBe(winner)
        } else if (!x.r.acquired) expect(x.tickets).toBe(winner)
      }
      expect(results.filter((x) => x.tickets !== winner).every((x) => 'e' in x)).toBe(true)
      // Only keys with the winning tickets are left, and holders() agrees with the winners.
      expect(new Set(await stored(res))).toEqual(new Set([winner]))
      expect((await pool[0]!.holders(res)).length).toBe(winner)
    }
  })

  it('ranks a key with other tickets (left by an older version) out of the holders', async () => {
    const res = resource('legacy')
    const b = backend()
    const got = await b.acquire(req(res, 'a', 1))
    expect(got.acquired).toBe(true)
    // As an older conclave could write: a second key of the same resource with tickets 2.
    await raw.put(`${prefix}${res}#old`).value('{"tickets":2,"leaseMs":2000,"metadata":null}')
    expect((await b.holders(res)).map((h) => h.candidate)).toEqual(['a'])
    await raw.delete().key(`${prefix}${res}#old`)
  })
})

describe('tokens', () => {
  /** A backend whose path to etcd the test can cut, and a grant made through it. */
  async function cutOff(label: string) {
    const proxy = await startProxy({ targetPort: server.port })
    proxies.push(proxy)
    const b = etcdBackend({ hosts: `127.0.0.1:${proxy.port}`, prefix, timeoutMs: 1_000 })
    backends.push(b)
    const res = resource(label)
    const first = await b.acquire(req(res, 'x', 1, 10_000))
    if (!first.acquired) throw new Error('expected a grant')
    // The release goes nowhere (as to a dead member): the key survives it.
    proxy.cut()
    await expect(b.release({ resource: res, candidate: 'x', token: first.token })).rejects.toThrow(
      /^etcd at 127\.0\.0\.1:\d+: release failed/,
    )
    proxy.restore()
    expect(await queuedKeys(raw, prefix, res)).toEqual([`${prefix}${res}#x`])
    return { b, res, first }
  }

  /** Calls `fn` until the client has reconnected through the restored proxy. */
  async function once<T>(fn: () => Promise<T>): Promise<T> {
    const end = performance.now() + 15_000
    for (;;) {
      try {
        return await fn()
      } catch (error) {
        if (performance.now() > end) throw error
        await sleep(100)
      }
    }
  }

  it('never gives a new term the token of a grant whose release failed', async () => {
    const { b, res, first } = await cutOff('reuse')
    const again = await once(() => b.acquire(req(res, 'x', 1, 10_000)))
    if (!again.acquired) throw new Error('expected a grant')
    expect(again.token).toBeGreaterThan(first.token)
    // The old key is gone; the new one is a new key.
    const { kvs } = await raw.getAll().prefix(`${prefix}${res}#`).exec()
    expect(kvs.map((kv) => kv.create_revision)).toEqual([String(again.token)])
    // Nor is the old grant renewed.
    expect(
      await b.renew([{ resource: res, candidate: 'x', token: first.token, leaseMs: 10_000 }]),
    ).toEqual([false])
  })

  it('withdrawing (a release without a token) deletes the leftover key, so the next acquire makes a new one', async () => {
    const { b, res, first } = await cutOff('withdraw')
    await once(() => b.release({ resource: res, candidate: 'x' }))
    expect(await queuedKeys(raw, prefix, res)).toEqual([])
    const again = await b.acquire(req(res, 'x', 1, 10_000))
    if (!again.acquired) throw new Error('expected a grant')
    expect(again.token).toBeGreaterThan(first.token)
  })
})

describe('errors', () => {
  it('names host:port of an etcd it cannot reach and keeps the real error as cause', async () => {
    const port = await freePort() // nothing listens there
    const b = etcdBackend({ hosts: `127.0.0.1:${port}`, prefix, timeoutMs: 2_000 })
    backends.push(b)
    const error = await b.holders('errors/x').catch((e: unknown) => e)
    expect(error).toBeInstanceOf(BackendError)
    expect((error as Error).message).toMatch(new RegExp(`^etcd at 127\\.0\\.0\\.1:${port}: `))
    expect((error as Error).cause).toBeInstanceOf(Error)
    expect(((error as Error).cause as Error).message).toContain('ECONNREFUSED')
  })

  it('names host:port when the port is something else than etcd', async () => {
    const other = createServer((socket) => socket.destroy())
    await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve))
    const { port } = other.address() as AddressInfo
    try {
      const b = etcdBackend({ hosts: `127.0.0.1:${port}`, prefix, timeoutMs: 2_000 })
      backends.push(b)
      const error = await b.acquire(req(resource('errors'), 'x')).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(BackendError)
      expect((error as Error).message).toMatch(new RegExp(`^etcd at 127\\.0\\.0\\.1:${port}: `))
      expect((error as Error).cause).toBeInstanceOf(Error)
    } finally {
      other.close()
    }
  })

  it('refuses credentials and unknown parameters in a URL, never echoing a password', async () => {
    const cases: [string, Record<string, unknown>, RegExp][] = [
      [
        'etcd://root:s3cret@127.0.0.1:2379',
        { field: 'backend', value: 'etcd://root:***@127.0.0.1:2379' },
        /carries no credentials.*clientOptions: \{ auth/,
      ],
      ['etcd://root:s3cret@[bad', { field: 'backend' }, /etcd:\/\/root:\*\*\*@\[bad/],
      [
        'etcd://127.0.0.1:2379?prefix=a/&prefx=b/',
        { field: 'prefx', value: 'b/' },
        /^Invalid prefx: "b\/". "prefx" is not a parameter of etcd backend URLs. Known: prefix, timeoutMs, memberTimeoutMs\.$/,
      ],
      ['etcd://127.0.0.1:2379?password=s3cret', { field: 'password', value: '***' }, /Known:/],
      ['etcd://127.0.0.1:2379?timeoutMs=abc', { field: 'timeoutMs', value: 'abc' }, /integer/],
      ['etcd://127.0.0.1:2379?prefix=a/&prefix=b/', { field: 'prefix' }, /once/],
    ]
    // Options given in code are not echoed either.
    const given: Record<string, unknown>[] = [
      { hosts: 'root:s3cret@127.0.0.1:2379' },
      { hosts: ['127.0.0.1:2379', 'http://root:s3cret@127.0.0.1:2380'] },
      { hosts: '127.0.0.1:2379', password: 's3cret' },
    ]
    for (const options of given) {
      let error: unknown
      try {
        etcdBackend(options)
      } catch (e) {
        error = e
      }
      expect(error).toBeInstanceOf(OptionsError)
      expect((error as Error).message).not.toContain('s3cret')
      expect(JSON.stringify((error as OptionsError).value)).not.toContain('s3cret')
    }
    for (const [url, fields, message] of cases) {
      const error = await backendFromUrl(url).catch((e: unknown) => e)
      expect(error, url).toBeInstanceOf(OptionsError)
      expect(error, url).toMatchObject(fields)
      expect((error as Error).message, url).toMatch(message)
      expect((error as Error).message, url).not.toContain('s3cret')
      expect(JSON.stringify((error as OptionsError).value), url).not.toContain('s3cret')
    }
  })

  it('fails at once with a MissingPeerError when etcd3 is not installed', async () => {
    const out = await runWithoutPeers(`
      const seen = (e) => ({ name: e?.name, code: e?.code, peer: e?.peer, message: e?.message })
      const out = {}
      out.etcd3 = await import('etcd3').then(() => 'resolvable', () => 'missing')
      const { etcdBackend, backendFromUrl } = await import('./src/backends/etcd/index.js')
      try { etcdBackend({ hosts: '127.0.0.1:1' }); out.factory = 'made' } catch (e) { out.factory = seen(e) }
      out.url = await backendFromUrl('etcd://127.0.0.1:1').then(() => 'made', seen)
      console.log(JSON.stringify(out))
    `)
    expect(out.etcd3).toBe('missing')
    const missing = {
      name: 'MissingPeerError',
      code: 'ERR_CONCLAVE_MISSING_PEER',
      peer: 'etcd3',
      message: expect.stringContaining('npm install etcd3') as unknown,
    }
    expect(out.factory).toEqual(missing)
    expect(out.url).toEqual(missing)
  })
})
