// Real faults against the PostgreSQL backend: a holder process SIGKILLed, its connections
// terminated by the server, its network path black-holed, the server itself killed and restarted.
import { afterAll, describe, expect, it } from 'vitest'
import pg from 'pg'
import { postgresBackend, type PostgresBackend } from '../../src/backends/postgres/index.js'
import { Election } from '../../src/election.js'
import type { Term } from '../../src/term.js'
import { CANDIDATE_FILE, candidateArgs } from '../../testkit/candidate.js'
import { startProxy } from '../../testkit/proxy.js'
import { startPostgres } from '../../testkit/index.js'
import { exited, forkTs, nextMessage, sleep, uniqueSchema, until, withParam } from './helpers.js'

const server = await startPostgres()
const admin = new pg.Pool({ connectionString: server.connectionString, max: 2 })
admin.on('error', () => {})
const schema = uniqueSchema('faults')
const backends: PostgresBackend[] = []
const elections: Election[] = []
const errors: Error[] = []

const open = (options: Partial<Parameters<typeof postgresBackend>[0]> = {}) => {
  const b = postgresBackend({ connectionString: server.connectionString, schema, ...options })
  backends.push(b)
  return b
}
const elect = (
  b: PostgresBackend,
  resource: string,
  options: ConstructorParameters<typeof Election>[2],
) => {
  const e = new Election(b, resource, options)
  e.on('error', (error) => errors.push(error))
  elections.push(e)
  return e
}

afterAll(async () => {
  await Promise.all(elections.map((e) => e.close()))
  await Promise.all(backends.map((b) => b.close()))
  await admin.end()
  await server.stop()
})

describe('faults', () => {
  it('fails over about one lease after the holder process is SIGKILLed', async () => {
    const resource = 'faults/sigkill'
    const leaseMs = 2_000
    const url = withParam(server.connectionString, 'schema', schema)
    const child = forkTs(
      CANDIDATE_FILE,
      {},
      candidateArgs(url, resource, { leaseMs }, { manual: true }),
    )
    try {
      await nextMessage(child, 'ready')
      const elected = nextMessage(child, 'elected')
      child.send({ kit: 1, type: 'campaign' })
      const held = (await elected).token as number
      // The waiter's own lease is far longer than the test: only the backend's remaining time
      // (or a push) can wake it.
      const waiter = elect(open(), resource, { leaseMs: 60_000 })
      const waiting = waiter.campaign()
      await sleep(leaseMs / 2)
      const killedAt = performance.now()
      child.kill('SIGKILL')
      await exited(child)
      const term = await waiting
      const after = performance.now() - killedAt
      expect(term.token).toBeGreaterThan(held)
      // Not before the dead holder's lease (renewed at most renewMs = lease/3 before the kill)
      // ran out on the server, and well within a few leases.
      expect(after).toBeGreaterThan(leaseMs / 2)
      expect(after).toBeLessThan(5 * leaseMs)
      await term.resign()
    } finally {
      child.kill('SIGKILL')
      await exited(child)
    }
  })

  it('survives pg_terminate_backend on its pool and LISTEN connections: no double holder, push again', async () => {
    const resource = 'faults/terminate'
    const a = open({
      connectionString: withParam(server.connectionString, 'application_name', 'conclave_term_a'),
    })
    const b = open({
      connectionString: withParam(server.connectionString, 'application_name', 'conclave_term_b'),
    })
    // Long leases: only renewals (every 300 ms), pushes and the poll while down are in play.
    const ea = elect(a, resource, { leaseMs: 60_000, renewMs: 300 })
    const eb = elect(b, resource, { leaseMs: 60_000, renewMs: 300 })
    const observer = open()
    const ta = await ea.campaign()
    // A holder that won at once never watched; a watcher on its backend (as observe() would
    // be) gives it a LISTEN connection too.
    const unwatchA = await a.watch(resource, () => {})
    const waiting = eb.campaign()
    waiting.catch(() => {}) // awaited below; this only keeps a failed test from leaking it
    await until(() => b.listening && a.listening, 10_000, 'both LISTEN connections')
    const connectsA = a.listenerConnects
    const connectsB = b.listenerConnects
    const killed = await admin.query<{ application_name: string }>(
      `SELECT application_name, pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE application_name IN ('conclave_term_a', 'conclave_term_b')`,
    )
    // At least each one's LISTEN connection and a's pool connection (it renews).
    expect(
      killed.rows.filter((r) => r.application_name === 'conclave_term_a').length,
    ).toBeGreaterThanOrEqual(2)
    expect(
      killed.rows.filter((r) => r.application_name === 'conclave_term_b').length,
    ).toBeGreaterThanOrEqual(1)
    // Renewals go on over fresh connections; never two holders meanwhile.
    const end = performance.now() + 2_000
    while (performance.now() < end) {
      expect(eb.isLeader).toBe(false)
      expect((await observer.holders(resource)).map((h) => h.candidate)).toEqual([ea.id])
      await sleep(50)
    }
    expect(ta.active).toBe(true)
    await until(
      () =>
        a.listening &&
        b.listening &&
        a.listenerConnects > connectsA &&
        b.listenerConnects > connectsB,
      15_000,
      'both LISTEN connections made again',
    )
    // The waiter now sleeps until the holder's 60 s lease could end: only a NOTIFY on its new
    // LISTEN connection can wake it within the test's timeout.
    const resignedAt = performance.now()
    await ta.resign()
    const tb = await waiting
    expect(performance.now() - resignedAt).toBeLessThan(15_000)
    expect(tb.token).toBeGreaterThan(ta.token)
    await tb.resign()
    await unwatchA()
  })

  it('steps down before anyone else is granted when its path is black-holed, and reconnects after', async () => {
    const resource = 'faults/blackhole'
    const proxy = await startProxy({ targetPort: server.port })
    try {
      const proxyUrl = `postgres://${server.user}@127.0.0.1:${proxy.port}/${server.database}`
      const a = open({ connectionString: proxyUrl, timeoutMs: 500, heartbeatMs: 500 })
      const ea = elect(a, resource, { leaseMs: 2_000 })
      const eb = elect(open(), resource, { leaseMs: 60_000 })
      const ta: Term = await ea.campaign()
      const unwatchA = await a.watch(resource, () => {}) // so a has a LISTEN connection to hang
      const waiting = eb.campaign()
      waiting.catch(() => {}) // awaited below; this only keeps a failed test from leaking it
      await until(() => a.listening, 10_000, 'the LISTEN connection through the proxy')
      let endedAt = Infinity
      ta.signal.addEventListener('abort', () => (endedAt = performance.now()))
      const revoked = new Promise((resolve) => ea.once('revoked', (_t, reason) => resolve(reason)))
      proxy.cut({ mode: 'blackhole' })
      const tb = await waiting
      const grantedAt = performance.now()
      expect(endedAt).toBeLessThan(grantedAt)
      expect(await revoked).toBe('expired')
      expect(tb.token).toBeGreaterThan(ta.token)
      // The hung LISTEN connection is found by its heartbeat and dropped.
      await until(() => !a.listening, 10_000, 'the hung LISTEN connection to be dropped')
      proxy.restore()
      await until(() => a.listening, 15_000, 'the LISTEN connection to come back')
      // Late bytes delivered after the restore (the stale renewals) changed nothing.
      expect((await eb.leaders()).map((h) => [h.candidate, h.token])).toEqual([[eb.id, tb.token]])
      await tb.resign()
      await unwatchA()
    } finally {
      await proxy.close()
    }
  })

  it('fails a call on a hung path instead of hanging, and polls watchers while LISTEN is down', async () => {
    const proxy = await startProxy({ targetPort: server.port })
    try {
      const url = `postgres://${server.user}@127.0.0.1:${proxy.port}/${server.database}`
      const b = open({ connectionString: url, timeoutMs: 300, pollMs: 100, heartbeatMs: 200 })
      let wakes = 0
      const unwatch = await b.watch('faults/poll', () => wakes++)
      expect(await b.holders('faults/poll')).toEqual([])
      proxy.cut({ mode: 'blackhole' })
      const t0 = performance.now()
      await expect(b.holders('faults/poll')).rejects.toMatchObject({ code: 'ERR_CONCLAVE_TIMEOUT' })
      // Bounded by the timeout (300 ms), not by TCP: a huge margin still tells the two apart.
      expect(performance.now() - t0).toBeLessThan(10_000)
      // The heartbeat finds the hung LISTEN connection; reconnecting fails while the path is
      // cut (reset now), and the watcher is woken by the slow poll meanwhile.
      await until(() => !b.listening, 10_000, 'the LISTEN connection to be dropped')
      proxy.cut({ mode: 'reset' })
      const before = wakes
      await until(() => wakes >= before + 3, 10_000, 'poll wake-ups while LISTEN is down')
      expect(b.listening).toBe(false)
      proxy.restore()
      await until(() => b.listening, 15_000, 'the LISTEN connection to come back')
      expect(await b.holders('faults/poll')).toEqual([])
      await unwatch()
    } finally {
      await proxy.close()
    }
  })

  it('recovers terms after the server is killed and restarted, with tokens still growing', async () => {
    const resource = 'faults/restart'
    const a = open()
    const b = open()
    const tokens: number[] = []
    const ea = elect(a, resource, { leaseMs: 3_000 })
    const eb = elect(b, resource, { leaseMs: 3_000 })
    for (const e of [ea, eb]) e.on('elected', (term) => tokens.push(term.token))
    void ea.run((term) => new Promise((r) => term.signal.addEventListener('abort', r)))
    await until(() => tokens.length === 1, 10_000, 'a first term')
    const unwatchA = await a.watch(resource, () => {}) // the holder's backend LISTENs too
    void eb.run((term) => new Promise((r) => term.signal.addEventListener('abort', r)))
    await until(() => a.listening && b.listening, 10_000, 'LISTEN connections')
    const before = tokens[0]!
    const connects = a.listenerConnects + b.listenerConnects
    await server.restart() // SIGKILL, then start on the same port and data directory
    // Someone leads again, the LISTEN connections are made again, never two leaders at once.
    await until(
      async () => (ea.isLeader || eb.isLeader) && (await ea.leaders().catch(() => [])).length === 1,
      30_000,
      'a leader after the restart',
    )
    await until(
      () => a.listening && b.listening && a.listenerConnects + b.listenerConnects >= connects + 2,
      20_000,
      'LISTEN connections after the restart',
    )
    const end = performance.now() + 3_000
    while (performance.now() < end) {
      expect(ea.isLeader && eb.isLeader).toBe(false)
      await sleep(50)
    }
    for (let i = 1; i < tokens.length; i++) expect(tokens[i]).toBeGreaterThan(tokens[i - 1]!)
    // A grant made after the restart carries a larger token than the one before it (with the
    // tickets the elections hold it with: another number would be refused while they hold).
    await Promise.all([ea.close(), eb.close()])
    const raw = await a.acquire({
      resource,
      candidate: 'probe',
      tickets: 1,
      leaseMs: 1_000,
      metadata: null,
    })
    if (!raw.acquired) throw new Error('expected the released grant')
    expect(raw.token).toBeGreaterThan(before)
    await a.release({ resource, candidate: 'probe' })
    await unwatchA()
  })

  afterAll(() => {
    // Errors are expected here (that is the point); they must be backend errors, reported.
    for (const error of errors)
      expect(error.message).toMatch(/postgres|acquire|Connection|terminat/i)
  })
})
