// A PostgreSQL primary with a streaming standby; candidates reach the database through a
// switchable path (the VIP stand-in). The primary is SIGKILLed, the standby promoted, the path
// switched to it. A standby that missed the latest grant (its replication frozen through the
// proxy) must not grant anew for a lease after its promotion, or the new holder overlaps the old
// one, who learns only at its next renewal. Invariants: never two holders, tokens grow.
import { randomBytes } from 'node:crypto'
import { afterEach, beforeEach, expect, it } from 'vitest'
import { postgresBackend, type PostgresBackend } from '../../src/backends/postgres/index.js'
import { Election } from '../../src/election.js'
import { startPostgresStandby, type PostgresStandbyPair } from '../../testkit/index.js'
import { sleep, until } from '../helpers/wait.js'

const lease = 3_000
let pair: PostgresStandbyPair
const backends: PostgresBackend[] = []
const elections: Election[] = []

beforeEach(async () => {
  pair = await startPostgresStandby()
})
afterEach(async () => {
  await Promise.all(elections.splice(0).map((e) => e.close()))
  await Promise.all(backends.splice(0).map((b) => b.close()))
  await pair?.stop()
})

/**
 * A candidate through the VIP. `deaf`: its LISTEN connection goes straight to the old primary,
 * so after the failover it hears no NOTIFY (as a holder whose listener is still reconnecting):
 * it learns of a loss only from its renewals, which is all the core can count on.
 */
function candidate(resource: string, deaf = false): Election {
  const backend = postgresBackend({
    connectionString: pair.vipConnectionString,
    timeoutMs: 1_000,
    maxLeaseMs: lease, // every candidate's lease: the promotion grace lasts it
    ...(deaf ? { listen: { connectionString: pair.primary.connectionString } } : {}),
  })
  backends.push(backend)
  const e = new Election(backend, resource, { leaseMs: lease })
  e.on('error', () => {}) // the failover makes errors; what matters is who holds
  elections.push(e)
  return e
}

/**
 * Holder a, waiter b; then the failover. With `missed`, replication is frozen before a's grant,
 * so the promoted standby has never seen it. Returns the overlap seen and the terms.
 */
async function failover(missed: boolean) {
  const resource = `promotion/${randomBytes(4).toString('hex')}`
  const a = candidate(resource, true)
  const b = candidate(resource)
  const waitCodes = new Set<string>()
  b.on('waiting', (info) => waitCodes.add(info.code))
  // Both backends migrate (the schema reaches the standby) before anything else.
  await a.leaders()
  await b.leaders()
  await pair.caughtUp()
  if (missed) pair.replication.cut({ mode: 'blackhole' })
  const ta = await a.campaign()
  let aEndedAt = Infinity
  ta.signal.addEventListener('abort', () => (aEndedAt = performance.now()))
  let bGrantedAt = Infinity
  const waiting = b.campaign().then((t) => ((bGrantedAt = performance.now()), t))
  waiting.catch(() => {}) // awaited below
  if (!missed) await pair.caughtUp()
  await sleep(lease / 3)
  await pair.primary.kill()
  const killedAt = performance.now()
  await pair.promote()
  pair.vip.switchTo(pair.standby.port)
  // b holds once a's term is over (missed), or after a resigns (a's grant lives on: had).
  const outcome = await Promise.race([waiting, sleep(3 * lease).then(() => undefined)])
  const kept = ta.active && !outcome
  if (!outcome) await ta.resign()
  const tb = await waiting
  const grantedAfter = performance.now() - killedAt
  // Both terms as their holders saw them: b's began before a's ended? (a's ends within a lease.)
  await until(() => !ta.active, 2 * lease, "a's term to end")
  const overlapMs = Math.max(0, aEndedAt - bGrantedAt)
  console.log(
    `postgres promotion (standby ${missed ? 'missed' : 'had'} the latest grant): ` +
      `overlap ${Math.round(overlapMs)} ms, old term ${kept ? 'kept (resigned after 3 leases)' : `ended ${Math.round(aEndedAt - killedAt)} ms after the kill`}, ` +
      `new holder ${Math.round(grantedAfter)} ms after the kill`,
  )
  return { overlapMs, old: ta, tb, kept, waitCodes }
}

it('never two holders when the promoted standby missed the latest grant; tokens grow', async () => {
  const { overlapMs, old, tb, waitCodes } = await failover(true)
  expect(overlapMs).toBe(0)
  // b was told why it waited while a ticket was free.
  expect([...waitCodes]).toContain('promotion-grace')
  expect(tb.token).toBeGreaterThan(old.token)
}, 60_000)

it('keeps the holder whose grant the promoted standby had; never two holders; tokens grow', async () => {
  const { overlapMs, old, tb, kept } = await failover(false)
  expect(overlapMs).toBe(0)
  expect(kept).toBe(true)
  expect(tb.token).toBeGreaterThan(old.token)
}, 60_000)

// Mixed leases: holder A's long grant, which the promoted standby missed, must be waited out
// by B even though B asks with a short lease: the grace lasts maxLeaseMs (migration 6), not
// the asking lease (migration 3's grace granted B one short lease after the promotion).
it('a short-lease candidate waits out the long lease of a grant the promoted standby missed', async () => {
  const LONG_MS = 10_000
  const SHORT_MS = 1_000
  const resource = `mixed/${randomBytes(4).toString('hex')}`
  const make = () => {
    const backend = postgresBackend({
      connectionString: pair.vipConnectionString,
      timeoutMs: 1_000,
      maxLeaseMs: LONG_MS,
    })
    backends.push(backend)
    return backend
  }
  const a = make()
  const b = make()
  // Both migrate (the schema reaches the standby) before replication is frozen.
  await a.holders(resource)
  await b.holders(resource)
  await pair.caughtUp()
  pair.replication.cut({ mode: 'blackhole' })
  const sentAt = performance.now()
  const granted = await a.acquire({
    resource,
    candidate: 'A',
    tickets: 1,
    leaseMs: LONG_MS,
    metadata: null,
  })
  expect(granted.acquired).toBe(true)
  const tokenA = granted.acquired ? granted.token : 0
  await pair.primary.kill()
  await pair.promote()
  pair.vip.switchTo(pair.standby.port)

  const codes = new Set<string>()
  let firstRefused: boolean | undefined
  let grantedAt = 0
  for (;;) {
    let answer
    try {
      answer = await b.acquire({
        resource,
        candidate: 'B',
        tickets: 1,
        leaseMs: SHORT_MS,
        metadata: null,
      })
    } catch {
      await sleep(100) // connections to the dead primary fail first
      continue
    }
    firstRefused ??= !answer.acquired
    if (!answer.acquired) {
      if (answer.wait) codes.add(answer.wait.code)
      await sleep(Math.min(answer.retryInMs, 250))
      continue
    }
    grantedAt = performance.now()
    expect(answer.token).toBeGreaterThan(tokenA)
    break
  }
  expect(firstRefused, 'B granted at its first ask, while A may still hold').toBe(true)
  expect([...codes]).toContain('promotion-grace')
  expect(grantedAt - sentAt, 'B granted while A may still hold').toBeGreaterThanOrEqual(LONG_MS)
}, 60_000)

// A released, B granted, both lost with the primary (the standby's replication frozen after
// A's grant): the promoted standby still has A's grant, unexpired. A asking again must not get
// it extended within the promotion grace: B may still believe in its term.
it('does not extend a grant the promoted standby kept after its holder released it', async () => {
  const LEASE_MS = 10_000
  const resource = `reask/${randomBytes(4).toString('hex')}`
  const make = () => {
    const backend = postgresBackend({
      connectionString: pair.vipConnectionString,
      timeoutMs: 1_000,
      maxLeaseMs: LEASE_MS,
    })
    backends.push(backend)
    return backend
  }
  const a = make()
  const b = make()
  await a.holders(resource)
  await b.holders(resource)
  const granted = await a.acquire({
    resource,
    candidate: 'A',
    tickets: 1,
    leaseMs: LEASE_MS,
    metadata: null,
  })
  expect(granted.acquired).toBe(true)
  const tokenA = granted.acquired ? granted.token : 0
  await pair.caughtUp() // the standby has A's grant
  pair.replication.cut({ mode: 'blackhole' })
  await a.release({ resource, candidate: 'A', token: tokenA })
  const gotB = await b.acquire({
    resource,
    candidate: 'B',
    tickets: 1,
    leaseMs: LEASE_MS,
    metadata: null,
  })
  expect(gotB.acquired, 'B granted after A released').toBe(true)
  await pair.primary.kill()
  await pair.promote()
  pair.vip.switchTo(pair.standby.port)

  let again
  for (;;) {
    try {
      again = await a.acquire({
        resource,
        candidate: 'A',
        tickets: 1,
        leaseMs: LEASE_MS,
        metadata: null,
      })
      break
    } catch {
      await sleep(100) // connections to the dead primary fail first
    }
  }
  expect(again.acquired, 'A granted again while B may still hold').toBe(false)
  if (!again.acquired) {
    expect(again.wait?.code).toBe('promotion-grace')
    expect(again.retryInMs).toBeGreaterThan(0)
    // The grant is untouched: still A's, with its old token.
    expect(again.holders.map((h) => [h.candidate, h.token])).toEqual([['A', tokenA]])
  }
}, 60_000)
