// The core's timing rules, on a manual clock: no sleeping, every instant exact.
import { describe, expect, it, vi } from 'vitest'
import type { Backend } from '../../src/backend.js'
import { MemoryBackend } from '../../src/backends/memory.js'
import { Election } from '../../src/election.js'
import { LeadershipLostError, OptionsError } from '../../src/errors.js'
import { validateToken } from '../../src/backend.js'
import { Faulty } from '../conformance/suite.js'
import { ManualClock, settle } from '../helpers/manual-clock.js'

/** Records every backend call with the clock's time; can delay answers by moving the clock. */
class Recording extends Faulty {
  calls: { op: string; at: number }[] = []
  answerDelayMs = 0
  constructor(
    inner: Backend,
    readonly clock: ManualClock,
  ) {
    super(inner)
  }
  #log(op: string) {
    this.calls.push({ op, at: this.clock.now() })
  }
  override async acquire(...a: Parameters<Backend['acquire']>) {
    this.#log('acquire')
    // The request reaches the server only after the delay: the server's lease starts later.
    if (this.answerDelayMs) this.clock.jump(this.answerDelayMs)
    return super.acquire(...a)
  }
  override async watch(...a: Parameters<Backend['watch']>) {
    this.#log('watch')
    return super.watch(...a)
  }
  override async renew(...a: Parameters<Backend['renew']>) {
    this.#log('renew')
    return super.renew(...a)
  }
  override async release(...a: Parameters<Backend['release']>) {
    this.#log('release')
    return super.release(...a)
  }
}

function setup(options: { leaseMs?: number } = {}) {
  const clock = new ManualClock()
  const store = new MemoryBackend({ clock })
  const backend = new Recording(store, clock)
  const election = new Election(backend, 'core/test', {
    leaseMs: 1000,
    marginMs: 50,
    renewMs: 300,
    retryMs: 100,
    drainMs: 500,
    clock,
    ...options,
  })
  const errors: Error[] = []
  election.on('error', (e) => errors.push(e))
  return { clock, store, backend, election, errors }
}

describe('election core timing', () => {
  it('measures the deadline from the send time of the acquire, minus the margin', async () => {
    const { clock, store, backend, election } = setup()
    backend.answerDelayMs = 300
    const sentAt = clock.now()
    const term = await election.campaign()
    expect(term.deadline).toBe(sentAt + 1000 - 50)
    // The server's lease started 300 ms after the send: its expiry is later still.
    backend.failing = true // no renewal gets through from here on
    await clock.advance(649) // now = sentAt + 949
    expect(term.active).toBe(true)
    await clock.advance(1)
    expect(term.active).toBe(false)
    expect(term.endReason).toBe('expired')
    // At the instant the holder stepped down the backend still shows its grant.
    expect((await store.holders('core/test')).length).toBe(1)
    await clock.advance(400)
    expect(await store.holders('core/test')).toEqual([])
    backend.failing = false
    await election.close()
  })

  it('moves the deadline to each renewal’s send time plus lease minus margin', async () => {
    const { clock, backend, election } = setup()
    const renewed: { sentAt: number; roundTripMs: number }[] = []
    election.on('renewed', (_t, info) => renewed.push(info))
    const term = await election.campaign()
    const first = term.deadline
    await clock.advance(300) // one renew tick
    const renew = backend.calls.filter((c) => c.op === 'renew').at(-1)!
    expect(renew).toBeDefined()
    expect(term.deadline).toBe(renew.at + 950)
    expect(term.deadline).toBeGreaterThan(first)
    expect(renewed).toEqual([{ sentAt: renew.at, roundTripMs: 0 }])
    await clock.advance(10_000)
    expect(term.active).toBe(true)
    expect(backend.calls.filter((c) => c.op === 'renew').length).toBeGreaterThanOrEqual(30)
    await election.close()
  })

  it('fires the signal, then drains the work, then releases on close()', async () => {
    const { clock, backend, election } = setup()
    const order: string[] = []
    let finish!: () => void
    void election.run(async (term) => {
      term.signal.addEventListener('abort', () => order.push('signal'))
      await new Promise<void>((resolve) => (finish = resolve))
      order.push('work done')
    })
    await clock.advance(1)
    const closing = election.close().then(() => order.push('closed'))
    await clock.advance(100)
    expect(order).toEqual(['signal'])
    expect(backend.calls.some((c) => c.op === 'release')).toBe(false)
    finish()
    await clock.advance(1)
    await closing
    const releasedAt = backend.calls.findIndex((c) => c.op === 'release')
    expect(releasedAt).toBeGreaterThan(-1)
    expect(order).toEqual(['signal', 'work done', 'closed'])
  })

  it('releases once when an abort listener resigns the ending term itself', async () => {
    const { clock, backend, election } = setup()
    const term = await election.campaign()
    term.signal.addEventListener('abort', () => void term.resign())
    await term.resign()
    await clock.advance(1)
    expect(backend.calls.filter((c) => c.op === 'release')).toHaveLength(1)
    expect(term.endReason).toBe('resigned')
    await election.close()
  })

  it('bounds the drain by drainMs when the work ignores its signal', async () => {
    const { clock, backend, election } = setup()
    void election.run(() => new Promise(() => {})) // never ends
    await clock.advance(1)
    let closed = false
    void election.close().then(() => (closed = true))
    await clock.advance(499)
    expect(closed).toBe(false)
    expect(backend.calls.some((c) => c.op === 'release')).toBe(false)
    await clock.advance(1)
    expect(closed).toBe(true)
    expect(backend.calls.some((c) => c.op === 'release')).toBe(true)
  })

  it('campaigns again in run() after the backend says the grant is gone', async () => {
    const { clock, store, election } = setup()
    const tokens: number[] = []
    const reasons: string[] = []
    election.on('revoked', (_t, reason) => reasons.push(reason))
    void election.run((term) => void tokens.push(term.token))
    await clock.advance(1)
    expect(tokens).toHaveLength(1)
    // Someone else removes the grant behind our back (an operator, a restore): renew says lost.
    await store.release({ resource: 'core/test', candidate: election.id })
    await clock.advance(300)
    await clock.advance(1)
    expect(reasons).toEqual(['lost'])
    expect(tokens).toHaveLength(2)
    expect(tokens[1]).toBeGreaterThan(tokens[0]!)
    await election.close()
  })

  it('retries a failing backend with jittered, growing, capped backoff and reports each error', async () => {
    const { clock, backend, election, errors } = setup()
    backend.failing = true
    const campaign = election.campaign()
    await clock.advance(5_000)
    // Each attempt fails at its first call: the first asks at once, later ones watch first.
    const attempts = backend.calls
      .filter((c) => c.op === 'watch' || c.op === 'acquire')
      .map((c) => c.at)
    expect(attempts.length).toBeGreaterThan(10)
    const gaps = attempts.slice(1).map((t, i) => t - attempts[i]!)
    for (const [i, gap] of gaps.entries()) {
      expect(gap).toBeGreaterThanOrEqual(50) // retryMs / 2
      expect(gap).toBeLessThanOrEqual(Math.min(300, 100 * 2 ** i) + 1) // capped at renewMs
    }
    expect(new Set(gaps.map((g) => Math.round(g))).size).toBeGreaterThan(1) // jitter
    expect(errors.length).toBe(attempts.length)
    expect(errors[0]!.message).toMatch(/injected fault/)
    backend.failing = false
    const term = await (async () => {
      await clock.advance(400)
      return campaign
    })()
    expect(term.active).toBe(true)
    await election.close()
  })

  it('lets a stalled process learn its term ended before its next side effect', async () => {
    const { clock, election } = setup()
    const term = await election.campaign()
    clock.jump(2_000) // the event loop was blocked: no timer ran
    expect(term.signal.aborted).toBe(false)
    expect(() => term.assertActive()).toThrow(LeadershipLostError)
    expect(term.signal.aborted).toBe(true)
    expect((term.signal.reason as LeadershipLostError).reason).toBe('expired')
    expect(election.isLeader).toBe(false)
    await clock.advance(1)
    await election.close()
  })

  it('gives a term whose signal was first asked for after it ended an aborted signal, with one reason', async () => {
    const { election } = setup()
    const term = await election.campaign()
    await term.resign()
    // Nobody took the signal while the term lasted: it is made now, already aborted.
    expect(term.signal.aborted).toBe(true)
    const reason = term.signal.reason as LeadershipLostError
    expect(reason).toBeInstanceOf(LeadershipLostError)
    expect(reason.reason).toBe('resigned')
    expect(reason.token).toBe(term.token)
    expect(term.signal).toBe(term.signal)
    expect(() => term.assertActive()).toThrow(reason)
    // A signal taken while the term lasted fires at its end, with the same kind of reason.
    const next = await election.campaign()
    const signal = next.signal
    const fired: unknown[] = []
    signal.addEventListener('abort', () => fired.push(signal.reason))
    expect(signal.aborted).toBe(false)
    await next.resign()
    expect(fired).toHaveLength(1)
    expect((fired[0] as LeadershipLostError).reason).toBe('resigned')
    expect(() => next.assertActive()).toThrow(fired[0] as Error)
    await election.close()
  })

  it('warns once instead of throwing when an error has no listener', async () => {
    const clock = new ManualClock()
    const backend = new Faulty(new MemoryBackend({ clock }))
    backend.failing = true
    const election = new Election(backend, 'core/warn', { clock })
    const warn = vi.spyOn(process, 'emitWarning').mockImplementation(() => {})
    const campaign = election.campaign().catch((e: unknown) => e)
    await clock.advance(5_000)
    expect(warn).toHaveBeenCalledTimes(1)
    expect(String(warn.mock.calls[0]![0])).toMatch(/no 'error' listener/)
    warn.mockRestore()
    await election.close()
    expect(await campaign).toMatchObject({ code: 'ERR_CONCLAVE_CLOSED' })
  })

  it('refuses a second concurrent campaign, and rejects an aborted one with its reason', async () => {
    const { clock, store, election } = setup()
    await store.acquire({
      resource: 'core/test',
      candidate: 'other',
      tickets: 1,
      leaseMs: 60_000,
      metadata: null,
    })
    const controller = new AbortController()
    const first = election.campaign({ signal: controller.signal })
    await clock.advance(1)
    await expect(election.campaign()).rejects.toMatchObject({ code: 'ERR_CONCLAVE_BUSY' })
    controller.abort(new Error('no longer needed'))
    await expect(first).rejects.toThrow('no longer needed')
    await settle()
    await election.close()
  })

  it('emits elected and revoked with the reason, and resign hands back the grant', async () => {
    const { clock, store, election } = setup()
    const events: string[] = []
    election.on('elected', (t) => events.push(`elected ${t.token}`))
    election.on('revoked', (t, reason) => events.push(`revoked ${t.token} ${reason}`))
    const term = await election.campaign()
    expect(election.isLeader).toBe(true)
    await term.resign()
    expect(events).toEqual([`elected ${term.token}`, `revoked ${term.token} resigned`])
    expect(await store.holders('core/test')).toEqual([])
    expect(election.isLeader).toBe(false)
    await clock.advance(1)
    await election.close()
  })

  it('asks once when uncontended; a candidate that must wait watches, then asks again', async () => {
    const { clock, store, backend, election } = setup()
    await election.campaign()
    // One ask wins; the term then watches its own grant (to learn of a deletion at once).
    expect(backend.calls.map((c) => c.op)).toEqual(['acquire', 'watch'])

    const other = new Election(backend, 'core/test', { leaseMs: 1000, clock })
    backend.calls = []
    const waiting = other.campaign()
    await settle()
    // Watching before the second ask: a release between that ask and the wait still wakes it.
    expect(backend.calls.map((c) => c.op)).toEqual(['acquire', 'watch', 'acquire'])
    await election.close()
    const term = await waiting
    expect((await store.holders('core/test')).map((h) => h.token)).toEqual([term.token])
    await other.close()
  })
})

describe('leader event', () => {
  it('emits the holders when someone listens, on every change, until closed', async () => {
    const { clock, store, election } = setup()
    const seen: string[][] = []
    election.on('leader', (holders) => seen.push(holders.map((h) => h.candidate)))
    await clock.advance(1)
    await store.acquire({
      resource: 'core/test',
      candidate: 'other',
      tickets: 1,
      leaseMs: 500,
      metadata: null,
    })
    await clock.advance(1)
    await clock.advance(600) // the grant expires: the observer's own wake-up sees it
    expect(seen).toEqual([[], ['other'], []])
    await election.close()
    await store.acquire({
      resource: 'core/test',
      candidate: 'late',
      tickets: 1,
      leaseMs: 500,
      metadata: null,
    })
    await clock.advance(1)
    expect(seen).toHaveLength(3)
  })
})

describe('options', () => {
  const backend = new MemoryBackend()
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ leaseMs: -1 }, /Invalid leaseMs: -1\. leaseMs must be an integer/],
    [
      { leaseMs: 1000, renewMs: 960 },
      /Invalid renewMs: 960\. leaseMs must exceed renewMs \+ marginMs \(1000 <= 960 \+ 50\)/,
    ],
    [
      { lease: 5000 },
      /Invalid lease: 5000\. "lease" is not an election option\. Known options: leaseMs/,
    ],
    [{ tickets: 0 }, /Invalid tickets: 0\. tickets must be an integer from 1 to 10000/],
    [
      { metadata: () => 1 },
      /Invalid metadata: \[Function: metadata\]\. metadata must be a plain JSON value/,
    ],
    [{ metadata: { big: 'x'.repeat(5000) } }, /at most 4096 bytes/],
    [{ id: 'has space' }, /Invalid id: "has space"\. A candidate id is 1 to 200 printable ASCII/],
    [{ retryMs: 6000 }, /retryMs must not exceed renewMs \(5000\)/],
    [{ drainMs: 1.5 }, /Invalid drainMs: 1\.5/],
    [{ leaseMs: NaN }, /Invalid leaseMs: NaN\. leaseMs must be an integer/],
    [{ leaseMs: Infinity }, /Invalid leaseMs: Infinity\. leaseMs must be an integer/],
    [{ metadata: { run: () => 1 } }, /Invalid metadata: \{ run: \[Function: run\] \}\./],
  ]
  for (const [options, message] of bad) {
    it(`refuses ${JSON.stringify(options, (_k, v: unknown) => (typeof v === 'function' ? 'fn' : v)).slice(0, 60)}`, () => {
      const attempt = () => new Election(backend, 'opts/test', options)
      expect(attempt).toThrow(OptionsError)
      expect(attempt).toThrow(message)
    })
  }

  it('names a NaN token as NaN, not null', () => {
    expect(() => validateToken(NaN)).toThrow(
      /Invalid token: NaN\. A token is a positive safe integer/,
    )
  })

  it('refuses something that is not a backend, naming it', () => {
    expect(() => new Election({} as Backend, 'x')).toThrow(
      /Invalid backend: \{\}\. A backend is an object with acquire/,
    )
  })

  it('derives the defaults from leaseMs', () => {
    const e = new Election(backend, 'opts/defaults', { leaseMs: 30_000 })
    expect(e.options).toMatchObject({
      leaseMs: 30_000,
      renewMs: 10_000,
      marginMs: 1_500,
      retryMs: 1_000,
      drainMs: 5_000,
      tickets: 1,
      metadata: null,
    })
    expect(e.id).toMatch(/^[^:]+:\d+:[0-9a-f]{8}$/)
  })
})
