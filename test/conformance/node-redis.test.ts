// The conformance suite through node-redis clients (the `redis` package: v6, and v5 and v4
// installed under the aliases redis5 and redis4), against a real redis-server: the same
// backend as with ioredis, through the adapter of src/backends/redis/client.ts.
//
// v6 runs the whole suite. v5 and v4 run the cases that between them send every command the
// backend sends through a client (each script, the renewal pipeline, HMGET/TIME reads, the
// records) and use its subscriber connection (push wake-ups, observe, a grant deleted by
// hand): what differs between the client versions. The suite's slow cases (holding through
// several leases) check the backend's Lua scripts and the core, which the version of the client
// does not change; ioredis (conformance/redis.test.ts) and v6 run them.
import { createClient as createClient6 } from 'redis'
import { createClient as createClient5 } from 'redis5'
import { createClient as createClient4 } from 'redis4'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { redisBackend } from '../../src/backends/redis/index.js'
import { startRedis, type RedisServer } from '../../testkit/index.js'
import { runConformance } from './suite.js'

let server: RedisServer
const closers: (() => Promise<unknown>)[] = []

beforeAll(async () => {
  server = await startRedis()
})
// Runs after the suite's own afterAll has closed every backend.
afterAll(async () => {
  await Promise.allSettled(closers.splice(0).map((close) => close()))
  await server?.stop()
})

/** The cases v5 and v4 run (by title, exact), fast and covering every client path. */
const CLIENT_PATHS = new Set([
  'gives every new grant a larger token, across releases and expiries',
  'releases idempotently, and only the grant with the given token',
  'wakes a waiter by push when the holder releases',
  'lets observe() see every change of holders',
  'round-trips metadata to leaders() and observe() elsewhere',
  'ends every term held through a backend before closing it, and never retries a closed backend',
  'refuses a candidate asking for other tickets than the live grants were made with',
  'gives a restarted candidate (same chosen id) a larger token when its old grant survived',
  'ends a holder’s term within a round trip when its grant is deleted behind its back',
  'tryCampaign(): a term when free, undefined (and no queue place left) when held',
  'answers `ahead` in ask order, keeps a place on a re-ask, and grants in that order',
  'grants a free ticket only while held + ahead < tickets (tickets 2)',
  'keeps places with queued renewals in the same batch as grants, and never grants by them',
  'withdraws a place on a release without token',
  'wakes by push only the first waiters in line: `wake` names them',
  'keeps records: a fenced compare-and-set per (resource, key), and a wall clock',
])

// NODE_REDIS_ALL=1 runs the whole suite on v5 and v4 too (before a release, after an adapter change).
const subset = process.env.NODE_REDIS_ALL === '1' ? undefined : CLIENT_PATHS

const versions = {
  'node-redis v6': { make: () => createClient6({ url: server.url }), only: undefined },
  'node-redis v5': { make: () => createClient5({ url: server.url }), only: subset },
  'node-redis v4': { make: () => createClient4({ url: server.url }), only: subset },
}

const offered = new Set<string>()
for (const [name, { make, only }] of Object.entries(versions)) {
  // Each backend() has its own client, as separate processes would.
  runConformance(`redis (${name})`, {
    leaseMs: 500,
    ...(only === undefined
      ? {}
      : { only: (title: string) => (offered.add(title), only.has(title)) }),
    backend: async () => {
      const client = make()
      client.on('error', () => {})
      await client.connect()
      closers.push(() => client.quit())
      // An empty server started for this file: no startup grace (tested in server-faults).
      return redisBackend({ client, startupGrace: false })
    },
  })
}

// A renamed case would drop out of the v5/v4 runs silently: every listed title must exist.
it('names only cases the suite has in CLIENT_PATHS', () => {
  if (subset === undefined) return
  expect([...CLIENT_PATHS].filter((title) => !offered.has(title))).toEqual([])
})
