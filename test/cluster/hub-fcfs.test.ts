// First come, first served across the hub protocol, without processes: a Hub and a
// RemoteBackend joined by an in-process transport (the same messages node:cluster IPC and the
// local socket carry), plus raw messages a broken or hostile hub could send.
import { describe, expect, it } from 'vitest'
import type { WatchChange } from '../../src/backend.js'
import { Hub } from '../../src/backends/cluster/hub.js'
import { RemoteBackend, type Transport } from '../../src/backends/cluster/remote.js'
import { MemoryBackend } from '../../src/backends/memory.js'
import { ProtocolError } from '../../src/errors.js'
import { until } from '../helpers/wait.js'

/** A transport to `hub` (or, without one, to a hand that answers requests itself). */
function link(hub: Hub | undefined) {
  const listeners = new Set<(message: unknown) => void>()
  const closers = new Set<() => void>()
  const toPeer = (message: unknown) => {
    // Structured clone, as IPC would: nothing is shared by reference.
    const copy = structuredClone(message)
    queueMicrotask(() => listeners.forEach((fn) => fn(copy)))
  }
  const connection = hub?.connect((message) => toPeer(message))
  const sent: Record<string, unknown>[] = []
  const transport: Transport = {
    send: (message) => {
      sent.push(message as Record<string, unknown>)
      const copy = structuredClone(message)
      queueMicrotask(() => connection?.receive(copy))
    },
    onMessage: (fn) => (listeners.add(fn), () => listeners.delete(fn)),
    onClose: (fn) => (closers.add(fn), () => closers.delete(fn)),
  }
  return { transport, toPeer, sent, close: () => connection?.close() }
}

const ask = (candidate: string, leaseMs = 60_000) => ({
  resource: 'r',
  candidate,
  tickets: 1,
  leaseMs,
  metadata: null,
})

describe('the hub protocol carries first come, first served', () => {
  it('carries ahead, queued renewals and wake between a hub and its peers', async () => {
    const store = new MemoryBackend()
    const hub = new Hub(store)
    const [a, b] = [link(hub), link(hub)]
    const ra = new RemoteBackend(a.transport, { onError: (e) => errors.push(e) })
    const rb = new RemoteBackend(b.transport, { onError: (e) => errors.push(e) })
    const errors: Error[] = []
    const changes: (WatchChange | undefined)[] = []
    const unwatch = await rb.watch('r', (change) => changes.push(change))
    const held = await ra.acquire(ask('holder'))
    expect(held.acquired).toBe(true)
    expect(await rb.acquire(ask('w1'))).toMatchObject({ acquired: false, ahead: 0 })
    expect(await ra.acquire(ask('w2'))).toMatchObject({ acquired: false, ahead: 1 })
    const q = (candidate: string) => ({
      resource: 'r',
      candidate,
      token: 0,
      leaseMs: 60_000,
      queued: true as const,
    })
    expect(await rb.renew([q('w1'), q('w2'), q('nobody')])).toEqual([true, true, false])
    await ra.release({ resource: 'r', candidate: 'holder' })
    await until(() => changes.some((c) => c?.wake?.join() === 'w1'), 5_000, 'wake [w1]')
    expect(changes.every((c) => c !== undefined && !c.wake!.includes('w2'))).toBe(true)
    expect(errors).toEqual([])
    await unwatch()
    await ra.close()
    await rb.close()
    await store.close()
  })

  it('withdraws the places of a connection that closes (releaseOnClose), so the line moves on', async () => {
    const store = new MemoryBackend()
    const hub = new Hub(store)
    const [a, b] = [link(hub), link(hub)]
    const ra = new RemoteBackend(a.transport)
    const rb = new RemoteBackend(b.transport)
    expect((await rb.acquire(ask('holder'))).acquired).toBe(true)
    expect(await ra.acquire(ask('gone'))).toMatchObject({ acquired: false, ahead: 0 })
    expect(await rb.acquire(ask('next'))).toMatchObject({ acquired: false, ahead: 1 })
    await a.close() // a's worker exited
    expect(await rb.acquire(ask('next'))).toMatchObject({ acquired: false, ahead: 0 })
    await rb.close()
    await store.close()
  })

  it('keeps them with releaseOnClose false (a socket may close while its process lives on)', async () => {
    const store = new MemoryBackend()
    const hub = new Hub(store, { releaseOnClose: false })
    const [a, b] = [link(hub), link(hub)]
    const ra = new RemoteBackend(a.transport)
    const rb = new RemoteBackend(b.transport)
    expect((await rb.acquire(ask('holder'))).acquired).toBe(true)
    expect(await ra.acquire(ask('away'))).toMatchObject({ acquired: false, ahead: 0 })
    await a.close()
    expect(await rb.acquire(ask('next'))).toMatchObject({ acquired: false, ahead: 1 })
    await rb.close()
    await store.close()
  })

  it('refuses a malformed wake with a ProtocolError naming it, and wakes the watcher as for an unknown change', async () => {
    const fake = link(undefined) // no hub: this test answers the requests itself
    const errors: Error[] = []
    const remote = new RemoteBackend(fake.transport, {
      onError: (e) => errors.push(e),
      requestTimeoutMs: 200, // close()'s unwatch goes unanswered here
    })
    const changes: (WatchChange | undefined)[] = []
    const watching = remote.watch('r', (change) => changes.push(change))
    await until(() => fake.sent.length === 1, 5_000, 'the watch request')
    const request = fake.sent[0]!
    const watch = (request.args as { watch: string }).watch
    fake.toPeer({ conclave: 1, type: 'response', id: request.id, ok: true, value: null })
    await watching
    const bad: unknown[] = ['w1', [1], [''], ['x'.repeat(1000)], { 0: 'w1' }, null]
    for (const wake of bad) fake.toPeer({ conclave: 1, type: 'event', watch, wake })
    fake.toPeer({ conclave: 1, type: 'event', watch, wake: ['w1'] })
    fake.toPeer({ conclave: 1, type: 'event', watch })
    await until(() => changes.length === bad.length + 2, 5_000, 'every event')
    expect(changes).toEqual([...bad.map(() => undefined), { wake: ['w1'] }, undefined])
    expect(errors).toHaveLength(bad.length)
    for (const error of errors) {
      expect(error).toBeInstanceOf(ProtocolError)
      expect(error).toMatchObject({ code: 'ERR_CONCLAVE_PROTOCOL' })
      expect(error.message).toMatch(/^Invalid event wake: .+\. wake is absent or an array of/)
    }
    expect(errors[0]!.message).toContain('Invalid event wake: "w1"')
    await remote.close().catch(() => {})
  })
})
