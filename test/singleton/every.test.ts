// every(): leader-only interval jobs, in one process on the memory backend (real clock).
import { describe, expect, it } from 'vitest'
import { memoryBackend } from '../../src/backends/memory.js'
import { Election } from '../../src/election.js'
import { OptionsError, WorkError } from '../../src/errors.js'
import { every } from '../../src/singleton.js'

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

interface Run {
  who: string
  token: number
  start: number
  end: number
}

describe('every', () => {
  it('runs only on the holder, never overlapping itself, and never after its term ended', async () => {
    const backend = memoryBackend()
    const runs: Run[] = []
    const revokedAt = new Map<string, number>()
    let running = 0
    let overlapped = false
    const controller = new AbortController()
    const elections = ['a', 'b'].map((id) => {
      const election = new Election(backend, 'jobs/tick', { leaseMs: 600, id })
      election.on('revoked', () => revokedAt.set(id, performance.now()))
      return election
    })
    const jobs = elections.map((election) =>
      every(
        election,
        20,
        async ({ token }) => {
          if (running++ > 0) overlapped = true
          const start = performance.now()
          // Longer than the interval: the next run must wait for this one.
          await sleep(50)
          runs.push({ who: election.id, token, start, end: performance.now() })
          running--
        },
        { signal: controller.signal },
      ),
    )
    await until(() => runs.length >= 4, 5_000)
    const first = runs[0]!.who
    expect(runs.every((r) => r.who === first)).toBe(true) // only the holder
    const holder = elections.find((e) => e.id === first)!
    await holder.resign()
    await until(() => runs.some((r) => r.who !== first), 5_000)
    await until(() => runs.filter((r) => r.who !== first).length >= 3, 5_000)
    controller.abort()
    await Promise.all(jobs)
    expect(overlapped).toBe(false)
    for (const who of ['a', 'b']) {
      const mine = runs.filter((r) => r.who === who)
      for (let i = 1; i < mine.length; i++) {
        expect(mine[i]!.start).toBeGreaterThanOrEqual(mine[i - 1]!.end) // never overlapping
      }
    }
    // Nothing of the first holder started after its term ended.
    const ended = revokedAt.get(first)!
    expect(runs.filter((r) => r.who === first && r.start > ended)).toEqual([])
    const tokens = [...new Set(runs.map((r) => r.token))]
    expect(tokens).toHaveLength(2)
    expect(tokens[1]!).toBeGreaterThan(tokens[0]!)
  })

  it('runs on N holders with tickets: N', async () => {
    const backend = memoryBackend()
    const ran = new Set<string>()
    const controller = new AbortController()
    const elections = ['a', 'b', 'c'].map(
      (id) => new Election(backend, 'jobs/pool', { leaseMs: 600, tickets: 2, id }),
    )
    const jobs = elections.map((election) =>
      every(election, 20, () => void ran.add(election.id), { signal: controller.signal }),
    )
    await sleep(300)
    controller.abort()
    await Promise.all(jobs)
    expect(ran.size).toBe(2)
  })

  it('does not run in a stalled process once the deadline passed, although its timer is due', async () => {
    const backend = memoryBackend()
    const election = new Election(backend, 'jobs/stall', { leaseMs: 300 })
    const starts: { token: number; at: number }[] = []
    let revoked: string | undefined
    election.on('revoked', (_term, reason) => (revoked = reason))
    const controller = new AbortController()
    const job = every(
      election,
      100,
      ({ token }) => void starts.push({ token, at: performance.now() }),
      {
        signal: controller.signal,
      },
    )
    await until(() => starts.length >= 2, 5_000)
    // Block the event loop well past the deadline (300 ms lease): both the next run's timer and
    // the term's deadline timer are due when it frees up.
    const stalledAt = performance.now()
    const until_ = stalledAt + 700
    while (performance.now() < until_) {
      // busy
    }
    await sleep(50)
    // The stalled term never ran again (a later term, won after the stall, may run).
    const stalledToken = starts[0]!.token
    expect(starts.filter((s) => s.token === stalledToken && s.at > stalledAt)).toEqual([])
    // Ended by its deadline timer or by a renewal that found the grant expired, whichever fired first.
    expect(['expired', 'lost']).toContain(revoked)
    controller.abort()
    await job
    await election.close()
  })

  it('reports a throwing run and keeps going; first run after the interval with immediate: false', async () => {
    const election = new Election(memoryBackend(), 'jobs/throw', { leaseMs: 600 })
    const errors: Error[] = []
    let calls = 0
    const controller = new AbortController()
    const startedAt = performance.now()
    let firstAt = 0
    const job = every(
      election,
      150,
      () => {
        if (++calls === 1) {
          firstAt = performance.now()
          throw new Error('tick failed')
        }
      },
      { signal: controller.signal, immediate: false, onError: (e) => errors.push(e) },
    )
    await until(() => calls >= 2, 5_000)
    controller.abort()
    await job
    expect(firstAt - startedAt).toBeGreaterThanOrEqual(140)
    // Reported as the work's error (not a backend error), with what fn threw as its cause.
    expect(errors).toHaveLength(1)
    expect(errors[0]).toBeInstanceOf(WorkError)
    expect(errors[0]).toMatchObject({
      code: 'ERR_CONCLAVE_WORK',
      resource: 'jobs/throw',
    })
    expect((errors[0]!.cause as Error).message).toBe('tick failed')
    await election.close()
  })

  it("says when it started each run (startedAt, on the election's clock), before the run's first line", async () => {
    const election = new Election(memoryBackend(), 'jobs/started', { leaseMs: 600 })
    const controller = new AbortController()
    const seen: { startedAt: number; entered: number; deadline: number }[] = []
    const job = every(
      election,
      20,
      ({ startedAt, term }) => {
        seen.push({ startedAt, entered: performance.now(), deadline: term.deadline })
        if (seen.length === 3) controller.abort()
      },
      { signal: controller.signal },
    )
    await job
    await election.close()
    expect(seen).toHaveLength(3)
    for (const run of seen) {
      expect(run.startedAt).toBeLessThanOrEqual(run.entered)
      // Started within the term: every() checked it right before.
      expect(run.startedAt).toBeLessThan(run.deadline)
    }
    expect(seen[1]!.startedAt).toBeGreaterThan(seen[0]!.startedAt)
  })

  it('refuses bad arguments', async () => {
    const election = new Election(memoryBackend(), 'jobs/bad')
    await expect(every(election, 0, () => {})).rejects.toThrow(OptionsError)
    await expect(every(election, 1.5, () => {})).rejects.toThrow(/Invalid intervalMs: 1.5/)
    await expect(every(election, 10, 'x' as never)).rejects.toThrow(/Invalid fn/)
  })
})

async function until(check: () => boolean, timeoutMs: number): Promise<void> {
  const end = performance.now() + timeoutMs
  while (!check()) {
    if (performance.now() > end) throw new Error(`timed out after ${timeoutMs} ms`)
    await sleep(10)
  }
}
