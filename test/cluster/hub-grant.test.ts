// A release through the hub hands the freed ticket to the next waiter in line, and the hub
// pushes that grant only to the connection whose ask took the place, recording it as that
// connection's (so its disconnect frees it at once, as for a grant it asked for). A Hub and
// RemoteBackends joined by an in-process transport (the messages node:cluster IPC and the local
// socket carry), over the memory store the cluster and local hubs use.
import { describe, expect, it } from 'vitest'
import type { Backend, WatchChange } from '../../src/backend.js'
import { Hub, type HubConnection } from '../../src/backends/cluster/hub.js'
import { parseEvent } from '../../src/backends/cluster/protocol.js'
import { RemoteBackend } from '../../src/backends/cluster/remote.js'
import { MemoryBackend } from '../../src/backends/memory.js'
import { ProtocolError } from '../../src/errors.js'
import { Election } from '../../src/index.js'
import { until } from '../helpers/wait.js'

const RES = 'hub/grant'
const long = 60_000

/** A peer process: a RemoteBackend on its own hub connection, counting the asks it sends. */
function peer(hub: Hub) {
  const listeners = new Set<(message: unknown) => void>()
  const closers = new Set<() => void>()
  const connection: HubConnection = hub.connect((message) => {
    const copy = structuredClone(message)
    queueMicrotask(() => listeners.forEach((fn) => fn(copy)))
  })
  const counts = { acquire: 0 }
  const remote = new RemoteBackend(
    {
      send: (message) => {
        const copy = structuredClone(message) as { op?: string }
        if (copy.op === 'acquire') counts.acquire++
        queueMicrotask(() => connection.receive(copy))
      },
      onMessage: (fn) => (listeners.add(fn), () => listeners.delete(fn)),
      onClose: (fn) => (closers.add(fn), () => closers.delete(fn)),
    },
    { requestTimeoutMs: 10_000 },
  )
  /** The process dies: the hub drops its connection; its backend learns the channel closed. */
  const die = async () => {
    await connection.close()
    closers.forEach((fn) => fn())
  }
  return { remote, connection, counts, die }
}

const ask = (b: Backend, candidate: string) =>
  b.acquire({ resource: RES, candidate, tickets: 1, leaseMs: long, metadata: null })

function setup() {
  const store = new MemoryBackend()
  const hub = new Hub(store, { session: () => store.session() })
  return { store, hub }
}

describe('a release through the hub hands the ticket on', () => {
  it('an Election in line holds the pushed grant without sending an acquire', async () => {
    const { store, hub } = setup()
    const [a, b] = [peer(hub), peer(hub)]
    const holder = new Election(a.remote, RES, { leaseMs: long })
    const waiter = new Election(b.remote, RES, { leaseMs: long })
    try {
      const first = await holder.campaign()
      const inLine = new Promise((resolve) => waiter.once('waiting', resolve))
      const waiting = waiter.campaign()
      await inLine
      const asked = b.counts.acquire
      await first.resign()
      const term = await waiting
      expect(b.counts.acquire).toBe(asked)
      expect((await store.holders(RES)).map((h) => [h.candidate, h.token])).toEqual([
        [waiter.id, term.token],
      ])
      // Recorded as that connection's: its process dies and the grant goes at once.
      await b.die()
      expect(await store.holders(RES)).toEqual([])
    } finally {
      await Promise.all([holder.close(), waiter.close()])
      await Promise.all([a.remote.close(), b.remote.close()])
    }
  })

  it('names the grant only to the connection that took the place', async () => {
    const { store, hub } = setup()
    const [a, b, c] = [peer(hub), peer(hub), peer(hub)]
    const seenB: (WatchChange | undefined)[] = []
    const seenC: (WatchChange | undefined)[] = []
    await b.remote.watch(RES, (change) => seenB.push(change))
    await c.remote.watch(RES, (change) => seenC.push(change))
    const held = await ask(a.remote, 'a')
    if (!held.acquired) throw new Error('expected a grant')
    expect((await ask(b.remote, 'w1')).acquired).toBe(false)
    await until(() => seenB.length > 0 && seenC.length > 0, 5_000, 'the grant’s change')
    const [fromB, fromC] = [seenB.length, seenC.length]
    await a.remote.release({ resource: RES, candidate: 'a', token: held.token })
    await until(() => seenB.length > fromB && seenC.length > fromC, 5_000, 'both changes')
    const [grant] = await store.holders(RES)
    expect(grant).toMatchObject({ candidate: 'w1' })
    expect(seenB.slice(fromB)).toEqual([
      { wake: ['w1'], granted: [{ candidate: 'w1', token: grant!.token }] },
    ])
    expect(seenC.slice(fromC)).toEqual([{ wake: ['w1'] }])
    // Another process asking under that id is refused: the id is in use there.
    await expect(ask(c.remote, 'w1')).rejects.toMatchObject({
      code: 'ERR_CONCLAVE_CANDIDATE_IN_USE',
    })
    await b.die()
    expect(await store.holders(RES)).toEqual([])
    await Promise.all([a.remote.close(), c.remote.close()])
  })

  it('a grant made as the waiter’s process leaves is released, not left for a lease', async () => {
    for (const order of ['release first', 'leave first'] as const) {
      const { store, hub } = setup()
      const [a, b, c] = [peer(hub), peer(hub), peer(hub)]
      await b.remote.watch(RES, () => {})
      await c.remote.watch(RES, () => {})
      const held = await ask(a.remote, 'a')
      if (!held.acquired) throw new Error('expected a grant')
      expect((await ask(b.remote, 'gone')).acquired).toBe(false)
      expect((await ask(c.remote, 'next')).acquired).toBe(false)
      // The store applies the release and the hub drops b's connection in the same tick.
      const release = { resource: RES, candidate: 'a', token: held.token }
      const steps =
        order === 'release first'
          ? [store.release(release), b.die()]
          : [b.die(), store.release(release)]
      await Promise.all(steps)
      await until(
        async () => (await store.holders(RES)).some((h) => h.candidate === 'next'),
        5_000,
        `next to hold (${order})`,
      )
      expect((await store.holders(RES)).map((h) => h.candidate)).toEqual(['next'])
      await Promise.all([a.remote.close(), c.remote.close()])
    }
  })

  it('a hub without sessions names no grant to anyone, and the waiter still wins by asking', async () => {
    // Served straight over the store: every connection shares the store's own handle, so the
    // hub cannot tell whose place a grant filled. None is told it holds one it did not ask for.
    const store = new MemoryBackend()
    const hub = new Hub(store)
    const [a, b, c] = [peer(hub), peer(hub), peer(hub)]
    const seenC: (WatchChange | undefined)[] = []
    await c.remote.watch(RES, (change) => seenC.push(change))
    const holder = new Election(a.remote, RES, { leaseMs: long, id: 'a' })
    const waiter = new Election(b.remote, RES, { leaseMs: long, id: 'w' })
    try {
      const first = await holder.campaign()
      const inLine = new Promise((resolve) => waiter.once('waiting', resolve))
      const waiting = waiter.campaign()
      await inLine
      const asked = b.counts.acquire
      await first.resign()
      const term = await waiting
      expect(term.candidate).toBe('w')
      expect(b.counts.acquire).toBeGreaterThan(asked) // it asked for it
      expect(seenC.filter((change) => change?.granted)).toEqual([])
    } finally {
      await Promise.all([holder.close(), waiter.close()])
      await Promise.all([a.remote.close(), b.remote.close(), c.remote.close()])
    }
  })

  it('checks an event’s granted: a list of candidates and tokens', () => {
    expect(
      parseEvent({
        type: 'event',
        watch: 'w1',
        wake: ['x'],
        granted: [{ candidate: 'x', token: 7 }],
      }),
    ).toEqual({ type: 'event', watch: 'w1', wake: ['x'], granted: [{ candidate: 'x', token: 7 }] })
    for (const granted of [
      7,
      [{ candidate: 'x' }],
      [{ candidate: '', token: 1 }],
      [{ candidate: 'x', token: 1.5 }],
    ]) {
      expect(() => parseEvent({ type: 'event', watch: 'w1', granted })).toThrow(ProtocolError)
      expect(() => parseEvent({ type: 'event', watch: 'w1', granted })).toThrow(/event granted/)
    }
  })
})
