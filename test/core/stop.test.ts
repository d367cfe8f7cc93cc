// How a campaign stops (the caller's signal, close()) and how run() and observe() see a close,
// whenever it comes: the rules the core's cheap stop (no AbortSignal per campaign) must keep.
import { describe, expect, it } from 'vitest'
import { forwardingBackend } from '../../src/backends/kit.js'
import { MemoryBackend } from '../../src/backends/memory.js'
import { Election } from '../../src/election.js'
import { ElectionClosedError } from '../../src/errors.js'
import { ManualClock, settle } from '../helpers/manual-clock.js'

const OPTIONS = { leaseMs: 1000, renewMs: 300, marginMs: 50, retryMs: 30, drainMs: 200 }

function setup() {
  const clock = new ManualClock()
  const store = new MemoryBackend({ clock })
  const make = (id: string) => {
    const e = new Election(store.handle(), 'stop/test', { ...OPTIONS, id, clock })
    e.on('error', () => {})
    return e
  }
  return { clock, store, make }
}

describe('stopping a campaign', () => {
  it('close() rejects a waiting campaign with an ElectionClosedError, and every waiter with the same one', async () => {
    const { make } = setup()
    const a = make('a')
    const b = make('b')
    await a.campaign()
    const waiting = b.campaign()
    const observed = (async () => {
      const seen: number[] = []
      for await (const holders of b.observe()) seen.push(holders.length)
      return seen
    })()
    await settle()
    const closing = b.close()
    const error = await waiting.catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ElectionClosedError)
    expect(await observed).toEqual([1])
    await closing
    expect(a.isLeader).toBe(true)
    await a.close()
  })

  it('close() while the first ask is out rejects at once, and the grant that answers late is released', async () => {
    const clock = new ManualClock()
    const store = new MemoryBackend({ clock })
    let answer: (() => void) | undefined
    const inner = store.handle()
    const slow = forwardingBackend(inner, {
      acquire: (request) =>
        new Promise((resolve, reject) => {
          answer = () => void inner.acquire(request).then(resolve, reject)
        }),
    })
    const a = new Election(slow, 'stop/test', { ...OPTIONS, id: 'a', clock })
    a.on('error', () => {})
    const campaign = a.campaign()
    await settle()
    const closing = a.close()
    await expect(campaign).rejects.toBeInstanceOf(ElectionClosedError)
    answer!()
    await closing
    await settle()
    expect(await store.holders('stop/test')).toEqual([])
  })

  it('rejects with the caller’s reason when its signal aborts, before or while waiting', async () => {
    const { make } = setup()
    const a = make('a')
    const b = make('b')
    await a.campaign()
    const before = new AbortController()
    before.abort(new Error('before'))
    await expect(b.campaign({ signal: before.signal })).rejects.toThrow('before')
    const during = new AbortController()
    const waiting = b.campaign({ signal: during.signal })
    await settle()
    during.abort(new Error('during'))
    await expect(waiting).rejects.toThrow('during')
    // The stopped campaign left the line and the election can campaign again.
    await a.resign()
    const term = await b.campaign()
    expect(term.active).toBe(true)
    await a.close()
    await b.close()
  })

  it('after close(), observe() ends at once, and campaign() and run() refuse', async () => {
    const { make } = setup()
    const a = make('a')
    await a.close()
    const seen: unknown[] = []
    for await (const holders of a.observe()) seen.push(holders)
    expect(seen).toEqual([])
    await expect(a.campaign()).rejects.toBeInstanceOf(ElectionClosedError)
    await expect(a.run(() => {})).rejects.toBeInstanceOf(ElectionClosedError)
  })

  it('run() started before close() resolves once closed, its term ended as closed', async () => {
    const { make } = setup()
    const a = make('a')
    const reasons: string[] = []
    a.on('revoked', (_, reason) => reasons.push(reason))
    let started!: () => void
    const working = new Promise<void>((resolve) => (started = resolve))
    const running = a.run(async (term) => {
      started()
      await new Promise((resolve) => term.signal.addEventListener('abort', resolve))
    })
    await working
    await a.close()
    await running
    expect(reasons).toEqual(['closed'])
  })
})
