// First come, first served on the PostgreSQL backend (issue 18, DESIGN guarantee 12), below
// the conformance suite: migration 5's line, `ahead`, queued renewals mixed with grant renewals
// in one statement, and the NOTIFY payload naming whom a change wakes (the bare resource when
// the list is too long for NOTIFY's 8000 bytes).
import { afterAll, expect, it } from 'vitest'
import pg from 'pg'
import type { AcquireResult, WatchChange } from '../../src/backend.js'
import { postgresBackend, type PostgresBackend } from '../../src/backends/postgres/index.js'
import { parsePayload } from '../../src/backends/postgres/wakeups.js'
import { startPostgres } from '../../testkit/index.js'
import { sleep, uniqueSchema, until } from './helpers.js'

const server = await startPostgres()
const admin = new pg.Pool({ connectionString: server.connectionString, max: 2 })
admin.on('error', () => {})
const backends: PostgresBackend[] = []
const schema = uniqueSchema('fcfs')
const backend = () => {
  const b = postgresBackend({ connectionString: server.connectionString, schema })
  backends.push(b)
  return b
}

afterAll(async () => {
  await Promise.all(backends.map((b) => b.close()))
  await admin.end()
  await server.stop()
})

let n = 0
const unique = (label: string) => `fcfs/${label}-${++n}`
const ask = (
  b: PostgresBackend,
  resource: string,
  candidate: string,
  tickets = 1,
  leaseMs = 30_000,
) => b.acquire({ resource, candidate, tickets, leaseMs, metadata: null })
const ahead = (r: AcquireResult) => (r.acquired ? -1 : r.ahead)
const tokenOf = (r: AcquireResult) => {
  if (!r.acquired) throw new Error('expected a grant')
  return r.token
}
const line = async (resource: string) =>
  (
    await admin.query<{ candidate: string }>(
      `SELECT candidate FROM "${schema}".waiters WHERE resource = $1 ORDER BY joined`,
      [resource],
    )
  ).rows.map((r) => r.candidate)

it('answers ahead, keeps places in order, and grants the freed ticket to the first in line only', async () => {
  const b = backend()
  const resource = unique('order')
  const a = tokenOf(await ask(b, resource, 'a'))
  expect(ahead(await ask(b, resource, 'w1'))).toBe(0)
  expect(ahead(await ask(b, resource, 'w2'))).toBe(1)
  expect(ahead(await ask(b, resource, 'w3'))).toBe(2)
  expect(ahead(await ask(b, resource, 'w2'))).toBe(1)
  expect(await line(resource)).toEqual(['w1', 'w2', 'w3'])
  await b.release({ resource, candidate: 'a', token: a })
  expect(ahead(await ask(b, resource, 'late'))).toBe(3)
  const second = await ask(b, resource, 'w2')
  expect(ahead(second)).toBe(1)
  // A ticket free for someone ahead is no promotion grace.
  expect(second.acquired || second.wait).toBeFalsy()
  expect(tokenOf(await ask(b, resource, 'w1'))).toBeGreaterThan(a)
  expect(await line(resource)).toEqual(['w2', 'w3', 'late'])
})

it('with tickets > 1: held + ahead < tickets', async () => {
  const b = backend()
  const resource = unique('tickets')
  tokenOf(await ask(b, resource, 'a', 3))
  const h2 = tokenOf(await ask(b, resource, 'b', 3))
  tokenOf(await ask(b, resource, 'c', 3))
  expect(ahead(await ask(b, resource, 'w1', 3))).toBe(0)
  expect(ahead(await ask(b, resource, 'w2', 3))).toBe(1)
  await b.release({ resource, candidate: 'b', token: h2 })
  expect(ahead(await ask(b, resource, 'w2', 3))).toBe(1)
  tokenOf(await ask(b, resource, 'w1', 3))
})

it('skips a place not kept for its lease', async () => {
  const b = backend()
  const resource = unique('expire')
  const a = tokenOf(await ask(b, resource, 'a'))
  expect(ahead(await ask(b, resource, 'short', 1, 200))).toBe(0)
  expect(ahead(await ask(b, resource, 'long'))).toBe(1)
  await sleep(400) // the short place runs out (no timing is asserted)
  expect(ahead(await ask(b, resource, 'long'))).toBe(0)
  await b.release({ resource, candidate: 'a', token: a })
  tokenOf(await ask(b, resource, 'long'))
})

it('waiters() lists the live places in line order, skipping an expired one, and deletes nothing', async () => {
  const b = backend()
  const resource = unique('waiters')
  const a = tokenOf(await ask(b, resource, 'a'))
  await ask(b, resource, 'w1')
  await ask(b, resource, 'short', 1, 200)
  await ask(b, resource, 'w2')
  const listed = await b.waiters(resource)
  expect(listed.map((w) => w.candidate)).toEqual(['w1', 'short', 'w2'])
  for (const w of listed) {
    // On the database clock, at most the lease; places carry no metadata.
    expect(w.remainingMs).toBeGreaterThan(0)
    expect(w.remainingMs).toBeLessThanOrEqual(30_000)
    expect(w).not.toHaveProperty('metadata')
  }
  await sleep(400) // the short place runs out (no timing is asserted)
  expect(await b.waiters(resource)).toEqual([
    { candidate: 'w1', remainingMs: expect.any(Number) as number },
    { candidate: 'w2', remainingMs: expect.any(Number) as number },
  ])
  // Read-only: the expired row is skipped, not deleted (acquire does that, under the lock).
  expect(await line(resource)).toEqual(['w1', 'short', 'w2'])
  // A granted candidate stands in no line; a resource nobody waits for has an empty one.
  await b.release({ resource, candidate: 'a', token: a })
  tokenOf(await ask(b, resource, 'w1'))
  expect((await b.waiters(resource)).map((w) => w.candidate)).toEqual(['w2'])
  expect(await b.waiters(unique('nobody'))).toEqual([])
})

it('renews queued places and grants in one statement: true while no ticket is free for the place', async () => {
  const b = backend()
  const resource = unique('queued')
  const other = unique('other')
  const a = tokenOf(await ask(b, resource, 'a'))
  const o = tokenOf(await ask(b, other, 'o'))
  await ask(b, resource, 'w1')
  await ask(b, resource, 'w2')
  const q = (candidate: string) => ({
    resource,
    candidate,
    token: 0,
    leaseMs: 30_000,
    queued: true as const,
  })
  const og = { resource: other, candidate: 'o', token: o, leaseMs: 30_000 }
  expect(await b.renew([q('w1'), og, q('w2'), q('nobody')])).toEqual([true, true, true, false])
  await b.release({ resource, candidate: 'a', token: a })
  expect(await b.renew([q('w1'), q('w2')])).toEqual([false, true])
  expect(await b.holders(resource)).toEqual([])
  tokenOf(await ask(b, resource, 'w1'))
  expect(await b.renew([q('w2')])).toEqual([true])
})

it('release without a token withdraws the place; with a token it leaves the place alone', async () => {
  const b = backend()
  const resource = unique('withdraw')
  tokenOf(await ask(b, resource, 'a'))
  await ask(b, resource, 'w1')
  await ask(b, resource, 'w2')
  await b.release({ resource, candidate: 'w1', token: 12345 })
  expect(ahead(await ask(b, resource, 'w2'))).toBe(1)
  await b.release({ resource, candidate: 'w1' })
  expect(ahead(await ask(b, resource, 'w2'))).toBe(0)
})

it('notifies whom a release wakes; taking a place notifies nobody', async () => {
  const b = backend()
  const watcher = backend()
  const resource = unique('wake')
  const changes: (WatchChange | undefined)[] = []
  const unwatch = await watcher.watch(resource, (change) => changes.push(change))
  // The LISTEN connection's first connect wakes every watcher (unknown): not what is tested.
  await sleep(50)
  changes.length = 0
  const a = tokenOf(await ask(b, resource, 'a'))
  await until(() => changes.length >= 1, 5_000, 'change 1')
  expect(changes).toEqual([{ wake: [] }])
  await ask(b, resource, 'w1')
  await ask(b, resource, 'w2')
  await ask(b, resource, 'w1')
  await sleep(100)
  expect(changes).toHaveLength(1)
  await b.release({ resource, candidate: 'a', token: a })
  await until(() => changes.length >= 2, 5_000, 'change 2')
  expect(changes[1]).toEqual({ wake: ['w1'] })
  await unwatch()
})

it('a wake list too long for NOTIFY is sent as unknown', async () => {
  const b = backend()
  const watcher = backend()
  const resource = unique('long')
  const tickets = 100
  await Promise.all(Array.from({ length: tickets }, (_, i) => ask(b, resource, `h${i}`, tickets)))
  const long = (i: number) => `${'w'.repeat(190)}-${i}`
  for (let i = 0; i < tickets; i++) await ask(b, resource, long(i), tickets)
  const changes: (WatchChange | undefined)[] = []
  const unwatch = await watcher.watch(resource, (change) => changes.push(change))
  await sleep(50)
  changes.length = 0
  // Every grant runs out at once (set by hand), and the next acquire prunes them: the wake
  // list names the 100 waiters (20 kB of names), too long, so the change is unknown.
  await admin.query(
    `UPDATE "${schema}".grants SET expires_at = clock_timestamp() - interval '1 second' WHERE resource = $1`,
    [resource],
  )
  expect(ahead(await ask(b, resource, 'x', tickets))).toBe(tickets)
  await until(() => changes.length >= 1, 5_000, 'a change')
  expect(changes[0]).toBeUndefined()
  await unwatch()
})

it('reads the payload strictly', () => {
  expect(parsePayload('a/b')).toEqual({ resource: 'a/b' })
  expect(parsePayload('{"resource": "a", "wake": ["x"]}')).toEqual({
    resource: 'a',
    change: { wake: ['x'] },
  })
  expect(parsePayload('{"resource": "a", "wake": [1]}')).toEqual({ resource: 'a' })
  expect(parsePayload('{oops')).toEqual({ resource: '' })
})
