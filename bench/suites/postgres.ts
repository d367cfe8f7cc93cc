/**
 * conclave/postgres side by side with the `advisory-lock` package (session advisory locks, one
 * connection per lock), on a private PostgreSQL started here (with pg_stat_statements loaded,
 * so statement counts come from the server itself).
 */
import pg from 'pg'
import advisory from 'advisory-lock'
import { postgresBackend, type PostgresBackend } from '../../src/backends/postgres/index.js'
import { Election } from '../../src/election.js'
import { startProxy } from '../../test/helpers/proxy.js'
import { exited, forkTs, nextMessage, sleep } from '../../test/postgres/helpers.js'
import { startPostgres } from '../../test/servers/index.js'
import { type BenchRow, type BenchSuite, summarize } from '../stats.js'

const createMutex = advisory.default
const OURS = 'conclave/postgres'
const PEER = 'advisory-lock'

const suite: BenchSuite = {
  name: 'postgres',
  async run({ quick, log }) {
    const server = await startPostgres({
      settings: { shared_preload_libraries: 'pg_stat_statements', max_connections: 300 },
    })
    const admin = new pg.Pool({ connectionString: server.connectionString, max: 2 })
    admin.on('error', () => {})
    const cs = server.connectionString
    const schema = 'bench'
    const backends: PostgresBackend[] = []
    const elections: Election[] = []
    const open = (connectionString = cs, extra: { queryTimeoutMs?: number } = {}) => {
      const b = postgresBackend({ connectionString, schema, ...extra })
      backends.push(b)
      return b
    }
    const elect = (b: PostgresBackend, resource: string, leaseMs: number) => {
      const e = new Election(b, resource, { leaseMs })
      e.on('error', () => {})
      elections.push(e)
      return e
    }
    const rows: BenchRow[] = []
    try {
      await admin.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements')
      const n = quick ? 20 : 200

      // ---- uncontended acquire
      {
        const e = elect(open(), 'bench/uncontended', 15_000)
        await (await e.campaign()).resign() // warm-up: migrations, LISTEN, pool
        const samples: number[] = []
        for (let i = 0; i < n; i++) {
          const t0 = performance.now()
          const term = await e.campaign()
          samples.push(performance.now() - t0)
          await term.resign()
        }
        rows.push(summarize('uncontended acquire', OURS, samples, 'ms', 'Election.campaign()'))
        const mutex = createMutex(cs)('bench/uncontended')
        await (
          await mutex.lock()
        )()
        const peer: number[] = []
        for (let i = 0; i < n; i++) {
          const t0 = performance.now()
          const unlock = await mutex.lock()
          peer.push(performance.now() - t0)
          await unlock()
        }
        rows.push(
          summarize('uncontended acquire', PEER, peer, 'ms', 'lock(): opens a connection per lock'),
        )
        log(`uncontended acquire: ${n} samples each`)
      }

      // ---- graceful handoff: holder releases, a blocked waiter takes over
      {
        const handoffs = quick ? 10 : 60
        const a = elect(open(), 'bench/handoff', 15_000)
        const b = elect(open(), 'bench/handoff', 15_000)
        const samples: number[] = []
        let holder = await a.campaign()
        let [from, to] = [a, b]
        for (let i = 0; i < handoffs + 1; i++) {
          const waiting = to.campaign()
          await sleep(30) // the waiter is asleep on its LISTEN by now
          const t0 = performance.now()
          await holder.resign()
          holder = await waiting
          if (i > 0) samples.push(performance.now() - t0)
          ;[from, to] = [to, from]
        }
        await holder.resign()
        rows.push(summarize('graceful handoff', OURS, samples, 'ms', 'resign() → waiter elected'))
        const peer: number[] = []
        const ma = createMutex(cs)('bench/handoff')
        const mb = createMutex(cs)('bench/handoff')
        let unlock = await ma.lock()
        let [pf, pt] = [ma, mb]
        for (let i = 0; i < handoffs + 1; i++) {
          const waiting = pt.lock()
          await sleep(30)
          const t0 = performance.now()
          await unlock()
          unlock = await waiting
          if (i > 0) peer.push(performance.now() - t0)
          ;[pf, pt] = [pt, pf]
        }
        await unlock()
        rows.push(summarize('graceful handoff', PEER, peer, 'ms', 'unlock() → waiter locked'))
        log(`graceful handoff: ${handoffs} samples each`)
      }

      // ---- crash failover: the holder process is SIGKILLed
      {
        const leaseMs = quick ? 1_000 : 2_000
        const runs = quick ? 1 : 3
        const samples: number[] = []
        for (let i = 0; i < runs; i++) {
          const resource = `bench/sigkill-${i}`
          const child = forkTs('./candidate.ts', {
            PG_URL: cs,
            PG_SCHEMA: schema,
            PG_RESOURCE: resource,
            PG_LEASE_MS: String(leaseMs),
          })
          try {
            await nextMessage(child, 'ready')
            const elected = nextMessage(child, 'elected')
            child.send({ type: 'campaign' })
            await elected
            const waiter = elect(open(), resource, leaseMs)
            const waiting = waiter.campaign()
            await sleep(leaseMs / 2)
            const t0 = performance.now()
            child.kill('SIGKILL')
            const term = await waiting
            samples.push(performance.now() - t0)
            await term.resign()
          } finally {
            child.kill('SIGKILL')
            await exited(child)
          }
        }
        const row = summarize('crash failover (SIGKILL)', OURS, samples, 'ms')
        row.note = `${((row.p50 ?? 0) / leaseMs).toFixed(2)} × lease (${leaseMs} ms)`
        rows.push(row)
        const peer: number[] = []
        for (let i = 0; i < runs; i++) {
          const lock = `bench/sigkill-${i}`
          const child = forkTs('./advisory-holder.ts', { PG_URL: cs, PG_LOCK: lock })
          try {
            await nextMessage(child, 'locked')
            const waiting = createMutex(cs)(lock).lock()
            await sleep(200)
            const t0 = performance.now()
            child.kill('SIGKILL')
            const unlock = await waiting
            peer.push(performance.now() - t0)
            await unlock()
          } finally {
            child.kill('SIGKILL')
            await exited(child)
          }
        }
        rows.push(
          summarize(
            'crash failover (SIGKILL)',
            PEER,
            peer,
            'ms',
            'the kernel closes the socket, the server frees the lock',
          ),
        )
        log(`crash failover: ${runs} runs each`)
      }

      // ---- holder cut off: its network path black-holed (a hung host, a partition)
      {
        const leaseMs = quick ? 1_000 : 2_000
        const capMs = quick ? 8_000 : 30_000
        const proxy = await startProxy({ targetPort: server.port })
        const viaProxy = `postgres://${server.user}@127.0.0.1:${proxy.port}/${server.database}`
        try {
          const holder = elect(open(viaProxy, { queryTimeoutMs: 1_000 }), 'bench/cut', leaseMs)
          const waiter = elect(open(), 'bench/cut', leaseMs)
          const term = await holder.campaign()
          const waiting = waiter.campaign()
          await sleep(leaseMs / 2)
          let steppedDown = Infinity
          term.signal.addEventListener('abort', () => (steppedDown = performance.now()))
          const t0 = performance.now()
          proxy.cut({ mode: 'blackhole' })
          const won = await waiting
          const grantedAt = performance.now()
          const ms = grantedAt - t0
          rows.push({
            metric: 'holder cut off (blackhole)',
            subject: OURS,
            unit: 'ms',
            value: ms,
            samples: 1,
            note: `${(ms / leaseMs).toFixed(2)} × lease (${leaseMs} ms); old holder stepped down ${(grantedAt - steppedDown).toFixed(0)} ms before the grant`,
          })
          await won.resign()
          proxy.restore()

          const mutex = createMutex(viaProxy)('bench/cut')
          const unlockHolder = await mutex.lock()
          proxy.cut({ mode: 'blackhole' })
          const t1 = performance.now()
          let got: (() => Promise<void>) | undefined
          const waitingPeer = createMutex(cs)('bench/cut')
            .lock()
            .then((u) => (got = u))
          while (!got && performance.now() - t1 < capMs) await sleep(50)
          const peerMs = performance.now() - t1
          rows.push({
            metric: 'holder cut off (blackhole)',
            subject: PEER,
            unit: 'ms',
            value: got ? peerMs : capMs,
            samples: 1,
            note: got
              ? ''
              : `> ${capMs / 1000} s (still held: freed only when TCP keepalive gives up, ~2 h by default)`,
          })
          // Heal the path: the holder's connection works again and it unlocks normally.
          proxy.restore()
          await unlockHolder()
          await (
            await waitingPeer
          )()
          log('holder cut off: measured')
        } finally {
          await proxy.close()
        }
      }

      // ---- statements per second per idle waiter (pg_stat_statements)
      {
        const waiters = quick ? 5 : 20
        const leaseMs = quick ? 2_000 : 5_000
        const windowMs = quick ? 5_000 : 20_000
        await admin.query('CREATE ROLE bench_waiter LOGIN SUPERUSER')
        const waiterUrl = `postgres://bench_waiter@127.0.0.1:${server.port}/${server.database}`
        const holder = elect(open(), 'bench/idle', leaseMs)
        const term = await holder.campaign()
        const waiting = Array.from({ length: waiters }, () =>
          elect(open(waiterUrl), 'bench/idle', leaseMs).campaign(),
        )
        for (const w of waiting) w.catch(() => {})
        await sleep(leaseMs) // settle: every waiter is asleep on its LISTEN connection
        const count = async (role: string) =>
          Number(
            (
              await admin.query<{ n: string }>(
                `SELECT coalesce(sum(calls), 0) AS n FROM pg_stat_statements s
                   JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = $1`,
                [role],
              )
            ).rows[0]!.n,
          )
        const before = await count('bench_waiter')
        await sleep(windowMs)
        const after = await count('bench_waiter')
        const rate = (after - before) / waiters / (windowMs / 1000)
        rows.push({
          metric: 'statements/s per idle waiter',
          subject: OURS,
          unit: 'stmt/s',
          value: rate,
          samples: waiters,
          note: `pg_stat_statements over ${windowMs / 1000} s; a waiter retries when the holder's grant could expire (lease ${leaseMs} ms, renewed every lease/3) plus a LISTEN heartbeat per 10 s`,
        })
        await term.resign()
        await Promise.all(waiting.map((w) => w.then((t) => t.resign()).catch(() => {})))

        await admin.query('CREATE ROLE bench_peer LOGIN SUPERUSER')
        const peerUrl = `postgres://bench_peer@127.0.0.1:${server.port}/${server.database}`
        const unlock = await createMutex(cs)('bench/idle').lock()
        const peerWaiting = Array.from({ length: waiters }, () =>
          createMutex(peerUrl)('bench/idle').lock(),
        )
        await sleep(1_000)
        const pBefore = await count('bench_peer')
        await sleep(windowMs)
        const pAfter = await count('bench_peer')
        const connections = Number(
          (
            await admin.query<{ n: string }>(
              "SELECT count(*) AS n FROM pg_stat_activity WHERE usename = 'bench_peer'",
            )
          ).rows[0]!.n,
        )
        rows.push({
          metric: 'statements/s per idle waiter',
          subject: PEER,
          unit: 'stmt/s',
          value: (pAfter - pBefore) / waiters / (windowMs / 1000),
          samples: waiters,
          note: `blocked in pg_advisory_lock: ${connections} server connections held for ${waiters} waiters`,
        })
        await unlock()
        // Each waiter unlocks as soon as it gets the lock (they get it in no set order).
        await Promise.all(peerWaiting.map((w) => w.then((u) => u())))
        log(`idle waiters: ${waiters} each, ${windowMs / 1000} s`)
      }

      // ---- renewing 10,000 held grants
      {
        const count = 10_000
        const calls = quick ? 5 : 20
        const b = open()
        await b.holders('bench/warm')
        const made = await admin.query<{ resource: string; token: string }>(
          `INSERT INTO "${schema}".grants (resource, candidate, token, expires_at, metadata)
           SELECT 'bench/bulk-' || i, 'holder', i, clock_timestamp() + interval '10 minutes', 'null'
             FROM generate_series(1, $1::int) AS i
           RETURNING resource, token`,
          [count],
        )
        const requests = made.rows.map((r) => ({
          resource: r.resource,
          candidate: 'holder',
          token: Number(r.token),
          leaseMs: 600_000,
        }))
        const samples: number[] = []
        for (let i = 0; i < calls; i++) {
          const t0 = performance.now()
          const results = await b.renew(requests)
          samples.push(performance.now() - t0)
          if (!results.every(Boolean)) throw new Error('a renewal of the bulk grants failed')
        }
        rows.push(
          summarize(
            'renew 10,000 held grants',
            OURS,
            samples,
            'ms',
            'one statement per tick for all grants (grants made by SQL)',
          ),
        )
        rows.push({
          metric: 'renew 10,000 held grants',
          subject: PEER,
          unit: 'ms',
          samples: 0,
          note: 'no renewal (session locks), but one server connection per held lock: 10,000 locks need 10,000 connections',
        })
        log(`renew: ${calls} calls of ${count}`)
      }
      return rows
    } finally {
      await Promise.all(elections.map((e) => e.close().catch(() => {})))
      await Promise.all(backends.map((b) => b.close()))
      await admin.end()
      await server.stop()
    }
  },
}

export default suite
