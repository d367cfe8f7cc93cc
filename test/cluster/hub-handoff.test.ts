// The graceful handoff across the hub protocol costs as few round trips as it can: a campaign
// that wins does not wait for the hub to answer its unwatch. A Hub and RemoteBackends joined by
// an in-process transport (the same messages node:cluster IPC and the local socket carry).
import { describe, expect, it } from 'vitest'
import { Hub } from '../../src/backends/cluster/hub.js'
import { RemoteBackend, type Transport } from '../../src/backends/cluster/remote.js'
import { forwardingBackend } from '../../src/backends/kit.js'
import { MemoryBackend } from '../../src/backends/memory.js'
import { Election } from '../../src/index.js'

function link(hub: Hub): Transport {
  const listeners = new Set<(message: unknown) => void>()
  const connection = hub.connect((message) => {
    const copy = structuredClone(message)
    queueMicrotask(() => listeners.forEach((fn) => fn(copy)))
  })
  return {
    send: (message) => {
      const copy = structuredClone(message)
      queueMicrotask(() => connection.receive(copy))
    },
    onMessage: (fn) => (listeners.add(fn), () => listeners.delete(fn)),
    onClose: () => () => {},
  }
}

describe('graceful handoff over the hub protocol', () => {
  it('a won campaign resolves without waiting for the hub to answer its unwatch', async () => {
    const store = new MemoryBackend()
    // The hub's unwatches hang until the end of the test: an answer that never comes (a busy
    // hub) must not hold a won campaign back by one more round trip.
    let unblock!: () => void
    const blocked = new Promise<void>((resolve) => (unblock = resolve))
    let unwatchesAsked = 0
    const served = forwardingBackend(store, {
      watch: async (resource, onChange) => {
        const unwatch = await store.watch(resource, onChange)
        return async () => {
          unwatchesAsked++
          await blocked
          await unwatch()
        }
      },
    })
    const hub = new Hub(served)
    const remotes = [0, 1].map(() => new RemoteBackend(link(hub), { requestTimeoutMs: 60_000 }))
    const [a, b] = remotes.map((r, i) => new Election(r, 'r', { leaseMs: 30_000, id: `c${i}` }))
    try {
      a!.on('error', () => {})
      b!.on('error', () => {})
      const held = await a!.campaign()
      const waiting = b!.campaign()
      // b waits in line (it watched, then asked again) before a lets go.
      await new Promise((resolve) => setTimeout(resolve, 50))
      await held.resign()
      const won = await Promise.race([
        waiting,
        new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 10_000)),
      ])
      expect(won).not.toBe('hung')
      expect(unwatchesAsked).toBeGreaterThanOrEqual(1)
    } finally {
      unblock()
      await Promise.all([a!.close(), b!.close()])
      await Promise.all(remotes.map((r) => r.close()))
      await store.close()
    }
  }, 20_000)
})
