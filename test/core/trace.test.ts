// Logs and traces (src/trace.ts): every step of an election on its diagnostics_channel, the
// `waiting` event with its reason, and NODE_DEBUG=conclave lines in a real child process.
import { spawn } from 'node:child_process'
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import type { AcquireRequest, AcquireResult } from '../../src/backend.js'
import { MemoryBackend } from '../../src/backends/memory.js'
import { Election, type WaitingInfo } from '../../src/election.js'
import { CHANNELS, type TraceStep } from '../../src/trace.js'
import { Faulty } from '../conformance/suite.js'
import { ManualClock, settle } from '../helpers/manual-clock.js'

const fixture = fileURLToPath(new URL('./fixtures/debuglog.ts', import.meta.url))

/** Every message published on conclave's channels, in order, as [step, message]. */
function record() {
  const seen: [TraceStep, Record<string, unknown>][] = []
  const subs = (Object.entries(CHANNELS) as [TraceStep, string][]).map(([step, name]) => {
    const fn = (message: unknown) => seen.push([step, message as Record<string, unknown>])
    subscribe(name, fn)
    return () => unsubscribe(name, fn)
  })
  cleanups.push(() => subs.forEach((off) => off()))
  return seen
}
const cleanups: (() => void)[] = []
afterEach(() => cleanups.splice(0).forEach((fn) => fn()))

const OPTIONS = { leaseMs: 1000, marginMs: 50, renewMs: 300, retryMs: 100, drainMs: 100 }

describe('diagnostics channels', () => {
  it('publishes campaign, waiting (held), elected, renewed, lost (expired), released and error', async () => {
    const clock = new ManualClock()
    const store = new MemoryBackend({ clock })
    // Renewals fail on demand (the others go through): a's term then expires at its deadline.
    let renewFails = false
    class Renewals extends Faulty {
      override async renew(...args: Parameters<Faulty['renew']>) {
        if (renewFails) throw new Error('injected fault: renewals fail')
        return super.renew(...args)
      }
    }
    const backend = new Renewals(store)
    const a = new Election(backend, 'trace/one', { ...OPTIONS, clock, id: 'a' })
    const b = new Election(backend, 'trace/one', { ...OPTIONS, clock, id: 'b' })
    a.on('error', () => {})
    b.on('error', () => {})
    const seen = record()
    const waits: WaitingInfo[] = []
    b.on('waiting', (info) => waits.push(info))
    const termA = await a.campaign()
    const campaignB = b.campaign()
    await settle()
    await clock.advance(300) // a renews
    renewFails = true // a's term expires at its deadline, then b wins
    a.once('revoked', () => (renewFails = false))
    await clock.advance(2_000)
    const termB = await campaignB
    await b.resign()
    const of = (who: string) =>
      seen
        .filter(([, m]) => m.candidate === who)
        .map(
          ([step, m]) =>
            `${step}${'reason' in m && step !== 'waiting' ? `:${String(m.reason)}` : ''}`,
        )
    expect(of('a')).toEqual(
      expect.arrayContaining([
        'campaign',
        'elected',
        'renewed',
        'error',
        'lost:expired',
        'released:expired',
        'ended:expired',
      ]),
    )
    const stepsA = of('a').filter((s) => s !== 'error')
    expect(stepsA.slice(0, 3)).toEqual(['campaign', 'elected', 'renewed'])
    expect(stepsA.indexOf('lost:expired')).toBeLessThan(stepsA.indexOf('released:expired'))
    expect(of('b')[0]).toBe('campaign')
    expect(of('b')).toContain('waiting')
    const stepsB = of('b').filter((s) => s !== 'renewed')
    expect(stepsB.slice(-3)).toEqual(['elected', 'released:resigned', 'ended:resigned'])
    expect(stepsA.at(-1)).toBe('ended:expired')
    const elected = seen.filter(([step]) => step === 'elected').map(([, m]) => m.token)
    expect(elected).toEqual([termA.token, termB.token])
    expect(waits[0]).toMatchObject({ code: 'held', holders: [{ candidate: 'a' }] })
    expect(waits[0]!.reason).toMatch(/every ticket \(1\) is held by a/)
    const waiting = seen.find(([step]) => step === 'waiting')![1]
    expect(waiting).toMatchObject({
      resource: 'trace/one',
      candidate: 'b',
      code: 'held',
      holders: 1,
    })
    await a.close()
    await b.close()
  })

  it("fires the term's signal before the lost step is published", async () => {
    const clock = new ManualClock()
    class Renewals extends Faulty {
      override async renew(): Promise<never> {
        throw new Error('injected fault: renewals fail')
      }
    }
    const election = new Election(new Renewals(new MemoryBackend({ clock })), 'trace/order', {
      ...OPTIONS,
      clock,
    })
    election.on('error', () => {})
    const term = await election.campaign()
    const abortedAtLost: boolean[] = []
    const fn = () => abortedAtLost.push(term.signal.aborted)
    subscribe(CHANNELS.lost, fn)
    cleanups.push(() => unsubscribe(CHANNELS.lost, fn))
    await clock.advance(2_000)
    expect(abortedAtLost).toEqual([true])
    await election.close()
  })

  it('publishes one ended step for a resign whose release fails', async () => {
    const clock = new ManualClock()
    class Releases extends Faulty {
      override async release(): Promise<never> {
        throw new Error('injected fault: releases fail')
      }
    }
    const election = new Election(new Releases(new MemoryBackend({ clock })), 'trace/end', {
      ...OPTIONS,
      clock,
    })
    election.on('error', () => {})
    const seen = record()
    const term = await election.campaign()
    await election.resign()
    const ends = seen.filter(([step]) => ['lost', 'released', 'ended'].includes(step))
    expect(ends).toEqual([
      [
        'ended',
        {
          resource: 'trace/end',
          candidate: election.id,
          token: term.token,
          reason: 'resigned',
          released: false,
        },
      ],
    ])
    await election.close()
  })

  it('says no-grant, not held, when a refusal comes with fewer holders than tickets', async () => {
    const clock = new ManualClock()
    let refuse = true
    class Blind extends Faulty {
      override async acquire(request: AcquireRequest): Promise<AcquireResult> {
        if (refuse) return { acquired: false, holders: [], retryInMs: 200 }
        return super.acquire(request)
      }
    }
    const election = new Election(new Blind(new MemoryBackend({ clock })), 'trace/blind', {
      ...OPTIONS,
      clock,
    })
    const waits: WaitingInfo[] = []
    election.on('waiting', (info) => waits.push(info))
    const campaign = election.campaign()
    await settle()
    refuse = false
    await clock.advance(300)
    await campaign
    expect(waits[0]).toMatchObject({ code: 'no-grant', retryInMs: 200, holders: [] })
    expect(waits[0]!.reason).toMatch(/granted nothing \(0 of 1 tickets held\)/)
    await election.close()
  })

  it('says nothing about waiting once the campaign was stopped during its ask', async () => {
    const clock = new ManualClock()
    const stop = new AbortController()
    let asks = 0
    class Held extends Faulty {
      override async acquire(): Promise<AcquireResult> {
        // The campaign stops while its second ask (the first after its watch) is out.
        if (++asks === 2) stop.abort()
        return {
          acquired: false,
          holders: [{ candidate: 'x', token: 1, metadata: null, remainingMs: 1000 }],
          retryInMs: 200,
        }
      }
    }
    const election = new Election(new Held(new MemoryBackend({ clock })), 'trace/stopped', {
      ...OPTIONS,
      clock,
    })
    const waits: WaitingInfo[] = []
    election.on('waiting', (info) => waits.push(info))
    await expect(election.campaign({ signal: stop.signal })).rejects.toThrow()
    expect(waits).toEqual([])
    await election.close()
  })

  it("passes a backend's own reason to wait on as the waiting event's code and reason", async () => {
    const clock = new ManualClock()
    const store = new MemoryBackend({ clock })
    let graceLeft = 500
    // A backend in a grace of its own (as redis after a restart): a free ticket, not granted yet.
    class Grace extends Faulty {
      override async acquire(request: AcquireRequest): Promise<AcquireResult> {
        if (graceLeft > 0)
          return {
            acquired: false,
            holders: [],
            retryInMs: graceLeft,
            wait: { code: 'startup-grace', reason: 'the server just started' },
          }
        return super.acquire(request)
      }
    }
    const election = new Election(new Grace(store), 'trace/grace', { ...OPTIONS, clock })
    const waits: WaitingInfo[] = []
    election.on('waiting', (info) => waits.push(info))
    const seen = record()
    const campaign = election.campaign()
    await settle()
    graceLeft = 0
    await clock.advance(501)
    await campaign
    expect(waits).toEqual([
      { code: 'startup-grace', reason: 'the server just started', retryInMs: 500, holders: [] },
    ])
    expect(seen.map(([step]) => step)).toEqual(['campaign', 'waiting', 'elected'])
    await election.close()
  })
})

describe('NODE_DEBUG=conclave', () => {
  function child(env: NodeJS.ProcessEnv) {
    return new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const proc = spawn(process.execPath, ['--import', 'tsx', fixture], {
        env: { ...process.env, ...env },
        stdio: ['ignore', 'ignore', 'pipe'],
      })
      let stderr = ''
      proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
      proc.on('exit', (code) => resolve({ code, stderr }))
    })
  }

  it('writes a line per campaign, wait, grant, renewal, loss and release to stderr', async () => {
    const { code, stderr } = await child({ NODE_DEBUG: 'conclave' })
    expect(code, stderr).toBe(0)
    const pid = /CONCLAVE (\d+):/.exec(stderr)?.[1]
    expect(pid).toBeDefined()
    for (const line of [
      /CONCLAVE \d+: campaign "debug\/job" \(candidate a\): 1 ticket\(s\), lease 400 ms/,
      /CONCLAVE \d+: elected "debug\/job" \(candidate a\): token \d+/,
      /CONCLAVE \d+: waiting "debug\/job" \(candidate b\): every ticket \(1\) is held by a \(code held/,
      /CONCLAVE \d+: renewed "debug\/job" \(candidate a\): token \d+, round trip \d+ ms/,
      /CONCLAVE \d+: released "debug\/job" \(candidate a\): token \d+ \(resigned\)/,
      /CONCLAVE \d+: elected "debug\/job" \(candidate b\)/,
      /CONCLAVE \d+: lost "debug\/job" \(candidate b\): token \d+ \(lost\)/,
      /CONCLAVE \d+: ended "debug\/job" \(candidate b\): token \d+ \(lost, not released\)/,
    ])
      expect(stderr).toMatch(line)
  })

  it('writes nothing without it', async () => {
    const { code, stderr } = await child({ NODE_DEBUG: '' })
    expect(code, stderr).toBe(0)
    expect(stderr).not.toMatch(/CONCLAVE/)
  })
})
