// An operator deletes a live grant by hand (a raw DEL of the resource's keys, from redis-cli):
// no script runs, so nothing is PUBLISHed on the resource's channel. With keyspace
// notifications on, the backend hears the deletion on the keys' __keyspace@<db>__ channels: the
// holder steps down within a round trip, without waiting for its next renewal. Without them,
// the holder learns it at its next renewal, and the backend warns once (CONCLAVE_REDIS_KEYSPACE)
// what that costs. Either way the resource's guard key (it expires with the holders key, never
// before a grant in it) keeps a waiter from winning before the old grant could have expired.
import { randomBytes } from 'node:crypto'
import type { Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { Backend } from '../../src/backend.js'
import { missingKeyspaceFlags, redisBackend, resourceKeys } from '../../src/backends/redis/index.js'
import { Election } from '../../src/election.js'
import type { TermEndReason } from '../../src/errors.js'
import { startRedis, type RedisServer } from '../../testkit/index.js'
import { fastFailingClient, sleep, until } from './helpers.js'

const WARNING = 'CONCLAVE_REDIS_KEYSPACE'
const warnings: Error[] = []
const onWarning = (warning: Error) => {
  if ((warning as Error & { code?: string }).code === WARNING) warnings.push(warning)
}
const closers: (() => Promise<void> | void)[] = []

beforeAll(() => void process.on('warning', onWarning))
afterAll(() => void process.off('warning', onWarning))
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})

const unique = (label: string) => `${label}/${randomBytes(4).toString('hex')}`

function client(server: RedisServer): Redis {
  const c = fastFailingClient(server.url, { commandTimeout: 5_000 })
  closers.push(() => c.disconnect())
  return c
}

function backend(server: RedisServer, lingerMs?: number) {
  // Every server here starts empty: no grant to lose, so no startup grace.
  const b = redisBackend({ client: client(server), startupGrace: false, lingerMs })
  closers.push(() => b.close())
  return b
}

/** The backend, counting the renewals and the answered acquires that go through it. */
function counting(inner: Backend) {
  const counts = { renews: 0, acquires: 0 }
  const wrapped: Backend = {
    name: inner.name,
    acquire: async (request) => {
      const result = await inner.acquire(request)
      counts.acquires++
      return result
    },
    renew: (requests) => {
      counts.renews++
      return inner.renew(requests)
    },
    release: (request) => inner.release(request),
    holders: (resource) => inner.holders(resource),
    watch: (resource, onChange) => inner.watch(resource, onChange),
    onClose: (hook) => inner.onClose(hook),
    close: () => inner.close(),
  }
  return { backend: wrapped, counts }
}

const LEASE = 2_000
// Late in the lease, as the holder: its first renewal is due 1.6 s after the win, its
// deadline 1.9 s after, and the server lets its grant expire 2 s after.
const RENEW = 1_600

interface Outcome {
  holderToken: number
  electedAt: number
  /** The holder's deadline just before the deletion. */
  deadline: number
  revokedAt: number
  reason: TermEndReason
  /** Renewals the holder had sent when its term ended. */
  renewsAtEnd: number
  waiterElectedAt: number
  waiterToken: number
}

type Key = 'holders' | 'grants' | 'guard'

/**
 * A holder and a waiter; the operator DELs `del` of the resource's keys under them, soon after
 * the win or just after the holder's first renewal: then the waiter's wake-up at the expiry it
 * was told of (2 s after the win) comes before the holder's next renewal (3.2 s after).
 */
async function operatorDeletes(
  server: RedisServer,
  { del = ['holders', 'grants'], after = 'win' }: { del?: Key[]; after?: 'win' | 'renewal' } = {},
): Promise<Outcome> {
  const admin = client(server)
  const resource = unique('operator-del')
  const keys = resourceKeys('conclave:', resource)
  const holderSide = counting(backend(server))
  const waiterSide = counting(backend(server))
  const errors: Error[] = []
  const holder = new Election(holderSide.backend, resource, { leaseMs: LEASE, renewMs: RENEW })
  const waiter = new Election(waiterSide.backend, resource, { leaseMs: LEASE, renewMs: RENEW })
  closers.push(
    () => holder.close(),
    () => waiter.close(),
  )
  holder.on('error', (e) => errors.push(e))
  let renewed = 0
  holder.on('renewed', () => renewed++)
  waiter.on('error', (e) => errors.push(e))
  let ended: { at: number; reason: TermEndReason; renews: number } | undefined
  holder.on('revoked', (_, reason) => {
    ended ??= { at: performance.now(), reason, renews: holderSide.counts.renews }
  })
  let waiterWon: { at: number; token: number } | undefined
  waiter.on('elected', (term) => {
    waiterWon ??= { at: performance.now(), token: term.token }
  })

  const term = await holder.campaign()
  const electedAt = performance.now()
  // The holder's own watch and the waiter's are in place, and the waiter has been told the
  // resource is held (its first ask, then its ask after watching).
  void waiter.campaign().catch(() => {})
  await until(
    async () =>
      Number((await admin.pubsub('NUMSUB', keys.channel))[1]) === 2 &&
      waiterSide.counts.acquires >= 2,
    5_000,
    'the holder watching its grant and the waiter waiting',
  )
  if (after === 'renewal') {
    await until(() => renewed === 1, 10_000, 'the holder’s first renewal')
    // The waiter still sleeps until the expiry it was told of before that renewal.
    expect(waiterSide.counts.acquires).toBe(2)
  } else {
    expect(holderSide.counts.renews).toBe(0)
  }
  const deadline = term.deadline
  expect(await admin.del(...del.map((k) => keys[k]))).toBe(del.length)

  await until(() => ended !== undefined && waiterWon !== undefined, 15_000, 'both terms')
  expect(errors).toEqual([])
  return {
    holderToken: term.token,
    electedAt,
    deadline,
    revokedAt: ended!.at,
    reason: ended!.reason,
    renewsAtEnd: ended!.renews,
    waiterElectedAt: waiterWon!.at,
    waiterToken: waiterWon!.token,
  }
}

const warningsFor = (server: RedisServer) =>
  warnings.filter((w) => w.message.includes(`:${server.port} `))

describe('with keyspace notifications (notify-keyspace-events Kghx)', () => {
  let server: RedisServer
  beforeAll(async () => {
    server = await startRedis({ args: ['--notify-keyspace-events', 'Kghx'] })
  })
  afterAll(async () => {
    await server?.stop()
  })

  it('the holder of a grant an operator DELs steps down at once, before the waiter wins, without a renewal', async () => {
    const o = await operatorDeletes(server)
    expect(o.reason).toBe('lost')
    // Ended by the deletion, not by its renewal 1.6 s after the win: none had been sent.
    expect(o.renewsAtEnd).toBe(0)
    // Never two active terms: the holder's ended before the waiter's began, and the waiter
    // won only after the holder's deadline (the guard), so even a holder that heard nothing
    // would have stepped down first.
    expect(o.revokedAt).toBeLessThanOrEqual(o.waiterElectedAt)
    expect(o.waiterElectedAt).toBeGreaterThan(o.deadline)
    expect(o.waiterToken).toBeGreaterThan(o.holderToken)
    expect(warningsFor(server)).toEqual([])
  })

  it('the same for a DEL after a renewal', async () => {
    const o = await operatorDeletes(server, { after: 'renewal' })
    expect(o.reason).toBe('lost')
    expect(o.renewsAtEnd).toBe(1) // the one before the deletion: none after it
    expect(o.revokedAt).toBeLessThanOrEqual(o.waiterElectedAt)
    expect(o.waiterElectedAt).toBeGreaterThan(o.deadline)
  })

  it('an operator who deletes the guard too hands over at once: the holder hears it as soon', async () => {
    const o = await operatorDeletes(server, { del: ['holders', 'grants', 'guard'] })
    expect(o.reason).toBe('lost')
    expect(o.renewsAtEnd).toBe(0)
    // Woken by the deletion, not by the old grant's expiry 2 s after the win. The two terms may
    // then overlap by up to a round trip: both sides heard the same event (see docs/redis.md).
    expect(o.waiterElectedAt - o.electedAt).toBeLessThan(RENEW)
  })

  it('subscribes the keys’ keyspace channels only while the resource is watched', async () => {
    const admin = client(server)
    const b = backend(server, 0)
    const resource = unique('keyspace-channels')
    const keys = resourceKeys('conclave:', resource)
    const channels = [keys.holders, keys.grants].map((key) => `__keyspace@0__:${key}`)
    const subscribers = async () =>
      (await admin.pubsub('NUMSUB', ...channels)).filter((_, i) => i % 2 === 1).map(Number)
    expect(await subscribers()).toEqual([0, 0])
    const unwatch = await b.watch(resource, () => {})
    // In place once watch() resolved.
    expect(await subscribers()).toEqual([1, 1])
    await unwatch()
    await until(
      async () => JSON.stringify(await subscribers()) === '[0,0]',
      5_000,
      'the keyspace channels unsubscribed',
    )
  })
})

describe('the guard', () => {
  let server: RedisServer
  beforeAll(async () => {
    server = await startRedis()
  })
  afterAll(async () => {
    await server?.stop()
  })

  it('keeps the resource ungranted after a DEL, whoever asks or withdraws, until it runs out', async () => {
    const admin = client(server)
    const b = backend(server)
    const resource = unique('guard')
    const keys = resourceKeys('conclave:', resource)
    const ask = (candidate: string) =>
      b.acquire({ resource, candidate, tickets: 1, leaseMs: 10_000, metadata: null })
    expect((await ask('a')).acquired).toBe(true)
    expect(await admin.del(keys.holders, keys.grants)).toBe(2)
    for (const candidate of ['b', 'a']) {
      const answer = await ask(candidate)
      if (answer.acquired) throw new Error(`${candidate} was granted the deleted grant's resource`)
      expect(answer.holders).toEqual([])
      // Told to ask again when the guard runs out: after the deleted grant's expiry.
      expect(answer.retryInMs).toBeGreaterThan(10_000 - 1_000)
      expect(answer.retryInMs).toBeLessThanOrEqual(20_000)
    }
    expect(await b.holders(resource)).toEqual([])
    // Withdrawals (a waiter giving up, a lost holder's cleanup) leave the guard in place.
    await b.release({ resource, candidate: 'b' })
    await b.release({ resource, candidate: 'a' })
    expect((await ask('b')).acquired).toBe(false)
    // The guard gone (here by hand, as when it runs out): granted again, with a larger token.
    await admin.del(keys.guard)
    expect((await ask('b')).acquired).toBe(true)
  })

  it('goes with the last grant, released or expired, so nothing waits for it then', async () => {
    const admin = client(server)
    const b = backend(server)
    const resource = unique('guard-gone')
    const keys = resourceKeys('conclave:', resource)
    const ask = (candidate: string, leaseMs: number) =>
      b.acquire({ resource, candidate, tickets: 2, leaseMs, metadata: null })
    expect((await ask('a', 10_000)).acquired).toBe(true)
    expect((await ask('b', 10_000)).acquired).toBe(true)
    await b.release({ resource, candidate: 'a' })
    expect(await admin.exists(keys.guard)).toBe(1) // b still holds
    await b.release({ resource, candidate: 'b' })
    expect(await admin.exists(keys.guard)).toBe(0)
    // Expired, then found expired by the next call (acquire, holders or renew).
    const got = await ask('a', 100)
    if (!got.acquired) throw new Error('expected a grant')
    await sleep(200)
    expect(await b.renew([{ resource, candidate: 'a', token: got.token, leaseMs: 100 }])).toEqual([
      false,
    ])
    expect(await admin.exists(keys.guard)).toBe(0)
    expect((await ask('a', 100)).acquired).toBe(true)
    await sleep(200)
    expect(await b.holders(resource)).toEqual([])
    expect(await admin.exists(keys.guard)).toBe(0)
    expect((await ask('b', 100)).acquired).toBe(true)
    await sleep(200)
    expect((await ask('c', 10_000)).acquired).toBe(true)
  })
})

describe('with every keyspace event on (KA) and CONFIG refused', () => {
  let server: RedisServer
  beforeAll(async () => {
    // As on a managed Redis: the events are on, but CONFIG GET cannot tell the backend so.
    server = await startRedis({
      args: ['--notify-keyspace-events', 'KA', '--rename-command', 'CONFIG', ''],
    })
  })
  afterAll(async () => {
    await server?.stop()
  })

  it('still steps down at once, and warns once that it could not read the setting', async () => {
    const o = await operatorDeletes(server)
    expect(o.reason).toBe('lost')
    expect(o.renewsAtEnd).toBe(0)
    expect(o.revokedAt).toBeLessThanOrEqual(o.waiterElectedAt)
    const mine = warningsFor(server)
    expect(mine).toHaveLength(1) // two backends on one server: one warning
    expect(mine[0]!.message).toMatch(/could not read notify-keyspace-events/)
  })

  it('does not wake watchers for its own renewals, but does for a DEL, an HDEL and an expiry', async () => {
    const admin = client(server)
    const owner = backend(server)
    const watcher = backend(server)
    const resource = unique('own-events')
    const keys = resourceKeys('conclave:', resource)
    let woken = 0
    const unwatch = await watcher.watch(resource, () => woken++)
    closers.push(unwatch)
    const lease = 300
    const ask = (candidate: string, leaseMs: number) =>
      owner.acquire({ resource, candidate, tickets: 1, leaseMs, metadata: null })
    const got = await ask('a', lease)
    if (!got.acquired) throw new Error('expected a grant')
    await until(() => woken >= 1, 5_000, 'the grant published')
    await sleep(100)
    const afterGrant = woken
    // Each renewal is a ZADD (z), and about once per lease a PEXPIRE of the keys (g): neither
    // can take a grant away, so neither wakes anyone.
    const ttls: number[] = []
    for (let i = 0; i < 8; i++) {
      ttls.push(await admin.pttl(keys.holders))
      expect(
        await owner.renew([{ resource, candidate: 'a', token: got.token, leaseMs: lease }]),
      ).toEqual([true])
      await sleep(lease / 3)
    }
    expect(Math.min(...ttls)).toBeLessThan(lease) // so some renewals raised the keys' TTL
    await sleep(100)
    expect(woken).toBe(afterGrant)
    // An operator's HDEL of the grant (h).
    await admin.hdel(keys.grants, 'a')
    await until(() => woken > afterGrant, 5_000, 'woken by the HDEL')
    await owner.release({ resource, candidate: 'a' })
    // An operator's DEL (g) of a key.
    expect((await ask('b', 60_000)).acquired).toBe(true)
    await sleep(100)
    let before = woken
    await admin.del(keys.grants)
    await until(() => woken > before, 5_000, 'woken by the DEL')
    // A key whose TTL an operator cut short: woken when it expires (x), not by the PEXPIRE.
    await sleep(100)
    before = woken
    await admin.pexpire(keys.holders, 300)
    await sleep(100)
    expect(woken).toBe(before)
    await until(() => woken > before, 5_000, 'woken by the expiry')
  })
})

describe('without keyspace notifications (the default)', () => {
  let server: RedisServer
  beforeAll(async () => {
    server = await startRedis()
  })
  afterAll(async () => {
    await server?.stop()
  })

  it('the holder steps down at its next renewal, before the waiter wins; one warning', async () => {
    const o = await operatorDeletes(server)
    expect(o.reason).toBe('lost')
    // Nobody was told: the renewal 1.6 s after the win was the first to find the grant gone.
    expect(o.renewsAtEnd).toBe(1)
    expect(o.revokedAt).toBeLessThanOrEqual(o.waiterElectedAt)
    expect(o.waiterElectedAt).toBeGreaterThan(o.deadline)
    const mine = warningsFor(server)
    expect(mine).toHaveLength(1) // two backends on one server: one warning
    expect(mine[0]!.message).toContain('notify-keyspace-events ""')
    expect(mine[0]!.message).toContain('set notify-keyspace-events Kghx')
  })

  it('a DEL after a renewal: the waiter’s wake-up comes first, yet it waits for the guard', async () => {
    // The waiter wakes 2 s after the win, at the expiry it was told of; the holder's next
    // renewal is due 3.2 s after. Without the guard the waiter won at its wake-up.
    const o = await operatorDeletes(server, { after: 'renewal' })
    expect(o.reason).toBe('lost')
    expect(o.renewsAtEnd).toBe(2)
    expect(o.revokedAt).toBeLessThanOrEqual(o.waiterElectedAt)
    expect(o.waiterElectedAt).toBeGreaterThan(o.deadline)
  })
})

it('reads which keyspace notification classes are missing', () => {
  expect(missingKeyspaceFlags('')).toBe('Kghx')
  expect(missingKeyspaceFlags('Kghx')).toBe('')
  expect(missingKeyspaceFlags('AK')).toBe('')
  expect(missingKeyspaceFlags('AKE')).toBe('')
  expect(missingKeyspaceFlags('gxE')).toBe('Kh')
  expect(missingKeyspaceFlags('Kg')).toBe('hx')
  expect(missingKeyspaceFlags('AE')).toBe('K')
})
