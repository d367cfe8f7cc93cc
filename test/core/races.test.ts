// run() against close(), resign() and the caller's abort, swept over every microtask and
// timer offset around a win: the work is never handed an ended term, close() waits for it,
// and nobody else is granted while it runs.
import { describe, expect, it } from 'vitest'
import { MemoryBackend } from '../../src/backends/memory.js'
import { Election } from '../../src/election.js'
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
