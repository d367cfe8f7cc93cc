// A release hands the freed ticket to the next in line itself (migration 7, issue 18): the
// grant's token, its life (the place's: an absent waiter never holds longer), its metadata,
// the NOTIFY naming it only to the process whose ask took the place, no grant within a
// promotion's grace, the commit's synchronous_commit, and an Election holding it without a
// second ask.
import { afterAll, expect, it } from 'vitest'
import pg from 'pg'
import type { Backend, WatchChange } from '../../src/backend.js'
import { postgresBackend, type PostgresBackend } from '../../src/backends/postgres/index.js'
import { Election } from '../../src/election.js'
import { startPostgres } from '../../testkit/index.js'
import { sleep, uniqueSchema, until } from './helpers.js'

const server = await startPostgres()
const admin = new pg.Pool({ connectionString: server.connectionString, max: 2 })
admin.on('error', () => {})
const backends: PostgresBackend[] = []
const elections: Election[] = []
const schema = uniqueSchema('handoff')
const backend = (inSchema = schema) => {
  const b = postgresBackend({ connectionString: server.connectionString, schema: inSchema })
  backends.push(b)
  return b
}

afterAll(async () => {
  await Promise.all(elections.map((e) => e.close()))
  await Promise.all(backends.map((b) => b.close()))
  await admin.end()
  await server.stop()
})

let n = 0
const unique = (label: string) => `handoff/${label}-${++n}`
const ask = (b: Backend, resource: string, candidate: string, leaseMs = 30_000, metadata = null) =>
  b.acquire({ resource, candidate, tickets: 1, leaseMs, metadata })
const tokenOf = async (asked: ReturnType<typeof ask>) => {
  const r = await asked
  if (!r.acquired) throw new Error('expected a grant')
  return r.token
}
/** Watches `resource` on `b` (so its asks take places a release may grant), collecting changes. */
const watching = async (b: PostgresBackend, resource: string) => {
  const changes: WatchChange[] = []
  const unwatch = await b.watch(resource, (c) => c && changes.push(c)) // not connecting's wake-all
  return { changes, unwatch }
}
const line = async (inSchema: string, resource: string) =>
  (
    await admin.query<{ candidate: string }>(
      `SELECT candidate FROM "${inSchema}".waiters WHERE resource = $1 ORDER BY joined`,
      [resource],
    )
  ).rows.map((r) => r.candidate)

it('a release grants the first in line: a larger token, its metadata, its place’s life', async () => {
  const b = backend()
  const resource = unique('grant')
  const { changes, unwatch } = await watching(b, resource)
  const a = await tokenOf(ask(b, resource, 'a'))
  await b.acquire({ resource, candidate: 'w1', tickets: 1, leaseMs: 20_000, metadata: { m: 1 } })
  await ask(b, resource, 'w2')
  const from = changes.length
  await b.release({ resource, candidate: 'a', token: a })
  const holders = await b.holders(resource)
  expect(holders.map((h) => [h.candidate, h.metadata])).toEqual([['w1', { m: 1 }]])
  expect(holders[0]!.token).toBeGreaterThan(a)
  // What was left of w1's place (20 s from its ask), not a fresh lease from the release.
  expect(holders[0]!.remainingMs).toBeLessThanOrEqual(20_000)
  expect(await line(schema, resource)).toEqual(['w2'])
  await until(() => changes.length > from, 5_000, 'the release’s NOTIFY')
  expect(changes[from]).toEqual({
    wake: ['w1'],
    granted: [{ candidate: 'w1', token: holders[0]!.token }],
  })
  // w1's next ask extends the grant it was given: the same token.
  expect(await tokenOf(ask(b, resource, 'w1'))).toBe(holders[0]!.token)
  await unwatch()
})

it('names the grant only to the backend whose ask took the place', async () => {
  const mine = backend()
  const other = backend()
  const resource = unique('whose')
  const own = await watching(mine, resource)
  const a = await tokenOf(ask(mine, resource, 'a'))
  await ask(mine, resource, 'w1')
  const seen: WatchChange[] = []
  const unwatch = await other.watch(resource, (c) => c && seen.push(c))
  await mine.release({ resource, candidate: 'a', token: a })
  await until(() => seen.length > 0, 5_000, 'the release’s NOTIFY')
  // Woken (its process may still ask), but not told it holds: it never asked for that place.
  expect(seen[0]).toEqual({ wake: ['w1'] })
  await unwatch()
  await own.unwatch()
})

it('an absent waiter holds no longer than its place would have stood', async () => {
  const b = backend()
  const resource = unique('absent')
  const { unwatch } = await watching(b, resource)
  const a = await tokenOf(ask(b, resource, 'a'))
  await ask(b, resource, 'gone', 300) // then never heard from again
  await ask(b, resource, 'next')
  await b.release({ resource, candidate: 'a', token: a })
  const [held] = await b.holders(resource)
  expect(held?.candidate).toBe('gone')
  expect(held!.remainingMs).toBeLessThanOrEqual(300)
  await sleep(500) // the place's life is over (no timing is asserted)
  expect(await b.holders(resource)).toEqual([])
  expect(await tokenOf(ask(b, resource, 'next'))).toBeGreaterThan(held!.token)
  await unwatch()
})

it('grants no place whose backend does not listen for the resource, nor one behind it', async () => {
  const listening = backend()
  const deaf = backend()
  const resource = unique('deaf')
  const { unwatch } = await watching(listening, resource)
  const a = await tokenOf(ask(listening, resource, 'a'))
  await ask(deaf, resource, 'w1') // takes no handoff: it asks for itself when woken
  await ask(listening, resource, 'w2')
  await listening.release({ resource, candidate: 'a', token: a })
  expect(await listening.holders(resource)).toEqual([])
  expect(await line(schema, resource)).toEqual(['w1', 'w2'])
  expect(await tokenOf(ask(deaf, resource, 'w1'))).toBeGreaterThan(a)
  await unwatch()
})

it('grants nothing within a promotion’s grace: the waiter is woken to ask', async () => {
  const graceSchema = uniqueSchema('handoff_grace')
  const b = backend(graceSchema)
  const resource = unique('grace')
  const { changes, unwatch } = await watching(b, resource)
  const a = await tokenOf(ask(b, resource, 'a'))
  await ask(b, resource, 'w1')
  // As if this timeline had just begun: its first sighting is now (migration 3).
  await admin.query(`DELETE FROM "${graceSchema}".timelines`)
  const from = changes.length
  await b.release({ resource, candidate: 'a', token: a })
  expect(await b.holders(resource)).toEqual([])
  expect(await line(graceSchema, resource)).toEqual(['w1'])
  await until(() => changes.length > from, 5_000, 'the release’s NOTIFY')
  expect(changes[from]).toEqual({ wake: ['w1'] })
  await unwatch()
})

it('a release that grants commits with the given synchronous_commit, one that does not with off', async () => {
  const b = backend()
  const resource = unique('commit')
  const { unwatch } = await watching(b, resource)
  const a = await tokenOf(ask(b, resource, 'a'))
  const c = await tokenOf(ask(b, unique('alone'), 'c'))
  await ask(b, resource, 'w1')
  const client = await admin.connect()
  try {
    const within = async (sql: string, values: unknown[]) => {
      await client.query('BEGIN')
      await client.query(sql, values)
      const { rows } = await client.query<{ s: string }>(
        `SELECT current_setting('synchronous_commit') AS s`,
      )
      await client.query('ROLLBACK')
      return rows[0]!.s
    }
    const release = `SELECT "${schema}".release($1, $2, $3, $4, $5)`
    expect(await within(release, [resource, 'a', a, 'local', 60_000])).toBe('local')
    expect(await within(release, [`handoff/alone-${n}`, 'c', c, 'local', 60_000])).toBe('off')
  } finally {
    client.release()
  }
  await unwatch()
})

it('an Election waiting in line holds the handed grant without asking again', async () => {
  const calls = { acquire: 0 }
  const counted = (inner: PostgresBackend): Backend =>
    new Proxy(inner, {
      get(target, property) {
        const value = Reflect.get(target, property) as unknown
        if (typeof value !== 'function') return value
        const method = (value as (...args: unknown[]) => unknown).bind(target)
        if (property !== 'acquire') return method
        return (...args: unknown[]) => (calls.acquire++, method(...args))
      },
    })
  const resource = unique('election')
  const probe = backend()
  const holder = new Election(backend(), resource, { leaseMs: 10_000 })
  const waiter = new Election(counted(backend()), resource, { leaseMs: 10_000, renewMs: 300 })
  elections.push(holder, waiter)
  const first = await holder.campaign()
  // Waiting: watching, and in line by its second ask.
  const inLine = new Promise((resolve) => waiter.once('waiting', resolve))
  const waiting = waiter.campaign()
  await inLine
  const asked = calls.acquire
  expect(await probe.waiters(resource)).toHaveLength(1)
  await first.resign()
  const term = await waiting
  expect(calls.acquire).toBe(asked)
  const [held] = await probe.holders(resource)
  expect(term.token).toBe(held!.token)
  expect(term.token).toBeGreaterThan(first.token)
  // It renews the grant as any other.
  await new Promise((resolve) => waiter.once('renewed', resolve))
  expect(term.active).toBe(true)
  await term.resign()
})
