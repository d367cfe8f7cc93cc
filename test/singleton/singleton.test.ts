// Singleton services on the memory backend (real clock, short leases): start/stop order
// across terms, a start that throws, a term that ends during start, a stop that hangs.
import { describe, expect, it } from 'vitest'
import { memoryBackend } from '../../src/backends/memory.js'
import { Election } from '../../src/election.js'
import { ElectionClosedError, OptionsError, WorkError } from '../../src/errors.js'
import {
  Singleton,
  type SingletonHandlers,
  type SingletonState,
  singletonService,
  singletonWorker,
} from '../../src/singleton.js'

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

function recordStates(singleton: Singleton): SingletonState[] {
  const states: SingletonState[] = []
  singleton.on('state', (state) => states.push(state))
  return states
}

/** Handlers that log each call, with a start and stop that take a little while. */
function logging(who: string, log: string[], startMs = 30, stopMs = 150): SingletonHandlers {
  return {
    async start(term) {
      log.push(`${who} start ${term.token}`)
      await sleep(startMs)
      log.push(`${who} started`)
    },
    async stop(reason, term) {
      log.push(`${who} stop ${term.token} ${reason}`)
      await sleep(stopMs)
      log.push(`${who} stopped`)
    },
  }
}

describe('Singleton', () => {
  it('starts on each term won and stops before the grant is released, in order across terms', async () => {
    const backend = memoryBackend()
    const log: string[] = []
    const a = singletonService(backend, 'mailer', logging('a', log), { leaseMs: 600, id: 'a' })
    const b = singletonService(backend, 'mailer', logging('b', log), { leaseMs: 600, id: 'b' })
    expect(a.resource).toBe('service/mailer')
    expect(a.state).toBe('pending')
    const states = recordStates(a)
    a.start()
    await a.whenState('ready')
    b.start()
    await sleep(200)
    expect(b.state).toBe('pending') // the other one waits
    await a.election.resign() // resolves after stop() finished and the grant was released
    await b.whenState('ready')
    await b.election.resign()
    await a.whenState('ready') // a again, on a later term
    await b.close()
    await a.close()
    expect(log).toEqual([
      'a start 1',
      'a started',
      'a stop 1 resigned',
      'a stopped',
      'b start 2',
      'b started',
      'b stop 2 resigned',
      'b stopped',
      'a start 3',
      'a started',
      'a stop 3 closed',
      'a stopped',
    ])
    expect(states).toEqual([
      'starting',
      'ready',
      'stopping',
      'pending',
      'starting',
      'ready',
      'stopping',
      'stopped',
    ])
    expect(await backend.holders('service/mailer')).toEqual([])
  })

  it('calls stop("failed") after a start that throws, steps down, and lets another take over', async () => {
    const backend = memoryBackend()
    const log: string[] = []
    const errors: Error[] = []
    const a = singletonWorker(
      backend,
      'indexer',
      {
        async start(term) {
          log.push(`a start ${term.token}`)
          await sleep(100)
          throw new Error('boom')
        },
        stop: (reason, term) => void log.push(`a stop ${term.token} ${reason}`),
      },
      { leaseMs: 600, id: 'a' },
    )
    expect(a.resource).toBe('worker/indexer')
    a.on('error', (error) => errors.push(error))
    const states = recordStates(a)
    const b = singletonWorker(backend, 'indexer', logging('b', log, 0, 0), {
      leaseMs: 600,
      id: 'b',
    })
    a.start()
    await a.whenState('starting')
    b.start()
    await b.whenState('ready')
    expect(log.slice(0, 3)).toEqual(['a start 1', 'a stop 1 failed', 'b start 2'])
    // The work's own error, kept apart from backend errors; what start threw is its cause.
    expect(errors).toHaveLength(1)
    expect(errors[0]).toBeInstanceOf(WorkError)
    expect(errors[0]).toMatchObject({
      code: 'ERR_CONCLAVE_WORK',
      resource: 'worker/indexer',
      token: 1,
    })
    expect((errors[0]!.cause as Error).message).toBe('boom')
    expect(errors[0]!.message).toBe('The work of term 1 on "worker/indexer" threw: boom')
    await until(() => a.state === 'pending', 2_000)
    expect(states).toEqual(['starting', 'stopping', 'pending'])
    await b.close()
    await a.close()
  })

  it('waits for a start in flight when the term ends, then stops; never ready in that term', async () => {
    const backend = memoryBackend()
    const log: string[] = []
    const a = new Singleton(new Election(backend, 'jobs/slow-start', { leaseMs: 600 }), {
      async start(term) {
        log.push(`start ${term.token}`)
        await sleep(200)
        log.push(`start returned, signal aborted: ${term.signal.aborted}`)
      },
      stop: (reason) => void log.push(`stop ${reason}`),
    })
    const states = recordStates(a)
    a.start()
    await a.whenState('starting')
    await a.election.resign()
    expect(log).toEqual(['start 1', 'start returned, signal aborted: true', 'stop resigned'])
    expect(states.slice(0, 3)).toEqual(['starting', 'stopping', 'pending'])
    await a.close()
  })

  it('bounds a stop that hangs: the grant is released after drainMs, and it does not campaign again meanwhile', async () => {
    const backend = memoryBackend()
    const log: string[] = []
    const errors: Error[] = []
    let startsOfA = 0
    const a = singletonService(
      backend,
      'hung',
      {
        start: () => void startsOfA++,
        stop: () => new Promise(() => {}), // never returns
      },
      { leaseMs: 600, drainMs: 300, id: 'a' },
    )
    a.on('error', (error) => errors.push(error))
    const b = singletonService(backend, 'hung', logging('b', log, 0, 0), { leaseMs: 600, id: 'b' })
    a.start()
    await a.whenState('ready')
    b.start()
    await b.whenState('pending')
    await a.election.resign() // resolves: the drain is bounded by drainMs
    await b.whenState('ready')
    expect(a.state).toBe('stopping')
    expect(errors.map((e) => e.message)).toEqual([
      expect.stringMatching(/stop\(\) has not finished after drainMs \(300 ms\)/),
    ])
    // b steps down; a would win if it campaigned, but its stop() still runs: b wins again.
    await b.election.resign()
    await until(() => log.includes('b start 3'), 3_000)
    expect(startsOfA).toBe(1)
    expect(a.state).toBe('stopping')
    await a.close()
    expect(a.state).toBe('stopped')
    await b.close()
  })

  it('bounds close() when stop hangs: resolves after drainMs, hands over, ends stopped', async () => {
    const backend = memoryBackend()
    const errors: Error[] = []
    const log: string[] = []
    const a = singletonService(
      backend,
      'hung-close',
      { start: () => {}, stop: () => new Promise(() => {}) },
      { leaseMs: 600, drainMs: 300, id: 'a' },
    )
    a.on('error', (error) => errors.push(error))
    const b = singletonService(backend, 'hung-close', logging('b', log, 0, 0), {
      leaseMs: 60_000,
      id: 'b',
    })
    a.start()
    await a.whenState('ready')
    b.start()
    await a.close()
    expect(a.state).toBe('stopped')
    expect(errors.map((e) => e.message)).toEqual([
      expect.stringMatching(/stop\(\) had not finished when the election closed/),
    ])
    // a's lease was 600 ms, but b's wake came from the release.
    await b.whenState('ready')
    await b.close()
  })

  it('closes promptly when start throws while the election is closing', async () => {
    const log: string[] = []
    const a = singletonService(
      memoryBackend(),
      'closing-start',
      {
        async start() {
          await sleep(100)
          throw new Error('start failed during close')
        },
        stop: (reason) => void log.push(`stop ${reason}`),
      },
      { leaseMs: 600, drainMs: 60_000 },
    )
    a.on('error', () => {})
    a.start()
    await a.whenState('starting')
    // drainMs is 60 s: this test's 10 s timeout proves close() did not wait for the drain bound.
    await a.close()
    expect(log).toEqual(['stop failed'])
    expect(a.state).toBe('stopped')
  }, 10_000)

  it('rejects whenState once stopped, and bad arguments with an OptionsError', async () => {
    const a = singletonService(memoryBackend(), 'x', { start() {}, stop() {} })
    const waiting = a.whenState('ready')
    await a.close()
    await expect(waiting).rejects.toBeInstanceOf(ElectionClosedError)
    await expect(a.whenState('pending')).rejects.toBeInstanceOf(ElectionClosedError)
    expect(() => a.start()).toThrow(ElectionClosedError)
    expect(
      () => new Singleton(new Election(memoryBackend(), 'x'), {} as SingletonHandlers),
    ).toThrow(OptionsError)
    expect(() => singletonService(memoryBackend(), 'a b', { start() {}, stop() {} })).toThrow(
      /Invalid resource: "service\/a b"/,
    )
  })
})

async function until(check: () => boolean, timeoutMs: number): Promise<void> {
  const end = performance.now() + timeoutMs
  while (!check()) {
    if (performance.now() > end) throw new Error(`timed out after ${timeoutMs} ms`)
    await sleep(10)
  }
}
