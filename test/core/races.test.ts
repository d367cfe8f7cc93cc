// run() against close(), resign() and the caller's abort, swept over every microtask and
// timer offset around a win: the work is never handed an ended term, close() waits for it,
// and nobody else is granted while it runs.
import { describe, expect, it } from 'vitest'
import { forwardingBackend } from '../../src/backends/kit.js'
import { MemoryBackend } from '../../src/backends/memory.js'
import { Election } from '../../src/election.js'
import { BackendTimeoutError } from '../../src/errors.js'
import type { Term } from '../../src/term.js'
import { ManualClock, settle } from '../helpers/manual-clock.js'

type Op = 'close' | 'resign' | 'abort'
const OPTIONS = { leaseMs: 1000, renewMs: 300, marginMs: 50, retryMs: 30, drainMs: 200 }

async function trial(op: Op, microtasks: number, timerMs: number) {
  const clock = new ManualClock()
  const store = new MemoryBackend({ clock })
  const a = new Election(store.handle(), 'race/test', { ...OPTIONS, id: 'a', clock })
  const b = new Election(store.handle(), 'race/test', { ...OPTIONS, id: 'b', clock })
  const problems: string[] = []
  let working = 0
  const caller = new AbortController()
  a.once('elected', () => {
    const act = () => {
      if (op === 'close') void a.close()
      else if (op === 'resign') void a.resign()
      else caller.abort()
    }
    let p = Promise.resolve()
    for (let k = 0; k < microtasks; k++) p = p.then(() => {})
    void p.then(() => (timerMs ? clock.setTimeout(act, timerMs) : act()))
  })
  b.on('elected', () => working > 0 && problems.push('b was granted while a’s work still ran'))
  // The work waits for its term's signal, the way the README's examples do.
  const fn = async (term: Term) => {
    if (term.signal.aborted) problems.push(`fn was handed an ended term (${op}, ${microtasks})`)
    working++
    await new Promise<void>((resolve) => term.signal.addEventListener('abort', () => resolve()))
    await new Promise<void>((resolve) => clock.setTimeout(resolve, 20)) // tidy-up work
    working--
  }
  let runSettled = false
  const running = a.run(fn, { signal: caller.signal }).finally(() => (runSettled = true))
  const waiting = b.campaign()
  await clock.advance(50)
  let closed = false
  const closing = a.close().then(() => {
    closed = true
    if (working > 0) problems.push('close() resolved while the work still ran')
  })
  await clock.advance(500)
  expect({ runSettled, closed }).toEqual({ runSettled: true, closed: true })
  await running
  await closing
  await waiting
  await b.close()
  await settle()
  return problems
}

describe('run() racing close(), resign() and abort', () => {
  for (const op of ['close', 'resign', 'abort'] as const) {
    it(`keeps drain-then-release for ${op}() at every offset around a win`, async () => {
      const problems: string[] = []
      for (const timerMs of [0, 1]) {
        for (let microtasks = 0; microtasks <= 12; microtasks++) {
          problems.push(...(await trial(op, microtasks, timerMs)))
        }
      }
      expect(problems).toEqual([])
    })
  }
})

describe('an abort while a won campaign unwinds', () => {
  it('resigns the term (signal first) instead of withdrawing its grant underneath it', async () => {
    const clock = new ManualClock()
    const store = new MemoryBackend({ clock })
    // Unwatching takes a round trip, as it does on a networked backend.
    const slow = store.handle()
    const watch = slow.watch.bind(slow)
    slow.watch = async (resource, onChange) => {
      const unwatch = await watch(resource, onChange)
      return () =>
        new Promise<void>((resolve) => clock.setTimeout(() => void unwatch().then(resolve), 10))
    }
    // A release is applied at once but answered a round trip later.
    const release = slow.release.bind(slow)
    slow.release = async (request) => {
      await release(request)
      await new Promise<void>((resolve) => clock.setTimeout(resolve, 10))
    }
    const holder = new Election(store.handle(), 'race/unwind', { ...OPTIONS, id: 'holder', clock })
    const a = new Election(slow, 'race/unwind', { ...OPTIONS, id: 'a', clock })
    const b = new Election(store.handle(), 'race/unwind', { ...OPTIONS, id: 'b', clock })
    const first = await holder.campaign()
    const caller = new AbortController()
    let aActive: Term | undefined
    a.once('elected', (term) => {
      aActive = term
      void Promise.resolve().then(() => caller.abort()) // a microtask after the win
    })
    // Whenever the store's holders change, a term of a's that is still active must still
    // have its grant there.
    const overlaps: string[] = []
    await store.watch('race/unwind', () => {
      void store.holders('race/unwind').then((holders) => {
        const term = aActive
        if (term?.active && !holders.some((h) => h.token === term.token))
          overlaps.push(`a's term ${term.token} was active after its grant was released`)
      })
    })
    const waiting = a.campaign({ signal: caller.signal }).catch(() => {})
    await clock.advance(30) // a withdrew (its id is chosen), asked, lost, watches
    void b.campaign().catch(() => {})
    await first.resign() // a wins (its watch wakes it), then unwinds its watch for 10 ms
    await clock.advance(100)
    await waiting
    expect(overlaps).toEqual([])
    await Promise.all([holder.close(), a.close(), b.close()])
  })
})

describe('the review’s cases', () => {
  it('never hands fn a term whose deadline passed before it could start (a stalled loop)', async () => {
    const clock = new ManualClock()
    const store = new MemoryBackend({ clock })
    const a = new Election(store, 'review/stall', { ...OPTIONS, clock })
    a.once('elected', () => clock.jump(OPTIONS.leaseMs * 2)) // the loop stalls right after the win
    const handed: string[] = []
    void a.run((term) => {
      if (clock.now() >= term.deadline) handed.push(`term ${term.token} past its deadline`)
    })
    await clock.advance(50)
    expect(handed).toEqual([])
    await a.close()
  })

  it('withdraws before asking again after a loss the backend did not write, so the token grows', async () => {
    const clock = new ManualClock()
    const store = new MemoryBackend({ clock })
    // A backend whose holders() once answers from a stale replica: the watch ends the term.
    let stale = false
    let poke: (() => void) | undefined
    const backend = forwardingBackend(store, {
      holders: async (resource) => (stale ? ((stale = false), []) : store.holders(resource)),
      watch: async (resource, onChange) => ((poke = onChange), store.watch(resource, onChange)),
    })
    const a = new Election(backend, 'review/lost', { ...OPTIONS, clock })
    const tokens: number[] = []
    void a.run(async (term) => {
      tokens.push(term.token)
      await new Promise((resolve) => term.signal.addEventListener('abort', resolve))
    })
    await clock.advance(10)
    stale = true
    poke!()
    await clock.advance(100)
    expect(tokens.length).toBe(2)
    expect(tokens[1]).toBeGreaterThan(tokens[0]!)
    await a.close()
  })

  it('releases a grant whose answer came after the lease minus the margin, reports a BackendTimeoutError, and asks again', async () => {
    const clock = new ManualClock()
    const store = new MemoryBackend({ clock })
    // The first acquire's answer is held back past the grant's usable life.
    const granted: number[] = []
    const backend = forwardingBackend(store, {
      acquire: async (request) => {
        const result = await store.acquire(request)
        if (result.acquired) granted.push(result.token)
        if (granted.length === 1) {
          await new Promise<void>((resolve) => clock.setTimeout(() => resolve(), OPTIONS.leaseMs))
        }
        return result
      },
    })
    const a = new Election(backend, 'review/slow', { ...OPTIONS, clock })
    const errors: Error[] = []
    a.on('error', (error) => errors.push(error))
    const campaign = a.campaign()
    await clock.advance(2 * OPTIONS.leaseMs)
    const term = await campaign
    expect(errors).toHaveLength(1)
    expect(errors[0]).toBeInstanceOf(BackendTimeoutError)
    expect(errors[0]!.message).toMatch(/took longer than the lease minus the margin \(950 ms\)/)
    // Asked again, for a new grant: the late one was never used.
    expect(granted).toHaveLength(2)
    expect(term.token).toBe(granted[1])
    expect(term.token).toBeGreaterThan(granted[0]!)
    expect(term.active).toBe(true)
    await a.close()
  })

  it('ends terms held through a memory handle as closed when the store closes', async () => {
    const clock = new ManualClock()
    const store = new MemoryBackend({ clock })
    const a = new Election(store.handle(), 'review/handle', { ...OPTIONS, clock })
    const term = await a.campaign()
    await store.close()
    expect(await term.ended).toBe('closed')
  })
})
