/**
 * conclave/etcd against the etcd3 package's own Election, side by side on one private etcd:
 * uncontended campaign, graceful handoff, crash failover (a SIGKILLed holder process) as a
 * multiple of the lease, and what holding 1 and many resources costs the server (gRPC messages
 * etcd received per second, from its /metrics). Both run with their defaults otherwise.
 */
import { fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { Etcd3 } from 'etcd3'
import {
  ETCD_CLIENT_DEFAULTS,
  etcdBackend,
  type EtcdBackend,
} from '../../src/backends/etcd/index.js'
import { Election } from '../../src/election.js'
import { startEtcd, type EtcdServer } from '../../test/servers/index.js'
import { type BenchRow, type BenchSuite, summarize } from '../stats.js'

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const name = (label: string) => `bench/${label}/${randomBytes(4).toString('hex')}`
const CONCLAVE = 'conclave/etcd'
const PEER = 'etcd3 Election'

/** gRPC messages etcd received from clients since it started (every method, every stream). */
async function messagesReceived(server: EtcdServer): Promise<number> {
  const text = await (await fetch(`${server.endpoint}/metrics`)).text()
  let total = 0
  for (const line of text.split('\n')) {
    const match = /^grpc_server_msg_received_total\{[^}]*\} (\S+)$/.exec(line)
    if (match) total += Number(match[1])
  }
  return total
}

/** Runs `fn(0..count-1)`, at most `limit` at a time. */
async function pool(count: number, limit: number, fn: (index: number) => Promise<unknown>) {
  let next = 0
  await Promise.all(
    Array.from({ length: Math.min(limit, count) }, async () => {
      while (next < count) await fn(next++)
    }),
  )
}

const suite: BenchSuite = {
  name: 'etcd',
  async run({ quick, log }) {
    const server = await startEtcd()
    const clients: Etcd3[] = []
    const backends: EtcdBackend[] = []
    const prefix = `bench-${randomBytes(4).toString('hex')}/`
    // `fast`: no etcd3 retries or circuit breaker (the breaker trips while thousands of
    // campaigns start on a loaded machine, and then refuses every call for 5 s).
    const client = (fast = false) => {
      const c = new Etcd3({ hosts: server.endpoint, ...(fast ? ETCD_CLIENT_DEFAULTS : {}) })
      clients.push(c)
      return c
    }
    // One backend per simulated process, on its own client.
    const backend = (fast = false) => {
      const b = etcdBackend({ client: client(fast), prefix })
      backends.push(b)
      return b
    }
    const rows: BenchRow[] = []
    try {
      await measure('uncontended campaign', uncontended)
      await measure('graceful handoff', handoff)
      await measure('crash failover', failover)
      for (const held of quick ? [1, 1_000] : [1, 10_000]) {
        await measure(`holding ${held}`, () => holding(held))
      }
    } finally {
      await Promise.all(backends.map((b) => b.close().catch(() => {})))
      for (const c of clients) c.close()
      await server.stop()
    }
    return rows

    async function measure(what: string, fn: () => Promise<BenchRow[]>) {
      try {
        const got = await fn()
        rows.push(...got)
        for (const row of got)
          log(`${row.metric} / ${row.subject}: ${row.p50 ?? row.value} ${row.unit}`)
      } catch (error) {
        log(`${what} failed: ${(error as Error).stack}`)
      }
    }

    async function uncontended(): Promise<BenchRow[]> {
      const n = quick ? 30 : 300
      const ours: number[] = []
      const b = backend()
      for (let i = 0; i < n + 10; i++) {
        const e = new Election(b, name('uncontended'), { leaseMs: 10_000 })
        const t0 = performance.now()
        const term = await e.campaign()
        const t1 = performance.now()
        await term.resign()
        await e.close()
        if (i >= 10) ours.push(t1 - t0) // after a warm-up
      }
      const theirs: number[] = []
      const c = client()
      for (let i = 0; i < n + 10; i++) {
        const t0 = performance.now()
        const campaign = c.election(name('uncontended'), 10).campaign('me')
        campaign.on('error', () => {})
        await campaign.wait()
        const t1 = performance.now()
        await campaign.resign()
        if (i >= 10) theirs.push(t1 - t0)
      }
      return [
        summarize('uncontended campaign', CONCLAVE, ours, 'ms', 'watch + keepalive & txn'),
        summarize('uncontended campaign', PEER, theirs, 'ms', 'lease grant + txn + watch'),
      ]
    }

    async function handoff(): Promise<BenchRow[]> {
      const n = quick ? 10 : 100
      const ours: number[] = []
      {
        const resource = name('handoff')
        const [a, b] = [backend(), backend()]
        let holder = new Election(a, resource, { leaseMs: 10_000 })
        let term = await holder.campaign()
        for (let i = 0; i < n; i++) {
          const waiter = new Election(i % 2 ? a : b, resource, { leaseMs: 10_000 })
          let heldAt = 0
          const waiting = waiter.campaign().then((t) => ((heldAt = performance.now()), t))
          await sleep(30 + Math.random() * 20) // queued and watching
          const releasedAt = performance.now()
          await term.resign()
          term = await waiting
          ours.push(heldAt - releasedAt)
          await holder.close()
          holder = waiter
        }
        await holder.close()
      }
      const theirs: number[] = []
      {
        const election = name('handoff')
        const [a, b] = [client(), client()]
        let holder = a.election(election, 10).campaign('0')
        holder.on('error', () => {})
        await holder.wait()
        for (let i = 0; i < n; i++) {
          const waiter = (i % 2 ? a : b).election(election, 10).campaign(String(i + 1))
          waiter.on('error', () => {})
          let heldAt = 0
          const waiting = waiter.wait().then(() => (heldAt = performance.now()))
          await sleep(30 + Math.random() * 20)
          const releasedAt = performance.now()
          await holder.resign()
          await waiting
          theirs.push(heldAt - releasedAt)
          holder = waiter
        }
        await holder.resign()
      }
      return [
        summarize('graceful handoff', CONCLAVE, ours, 'ms', 'resign() to the waiter holding'),
        summarize('graceful handoff', PEER, theirs, 'ms', 'resign() to the waiter elected'),
      ]
    }

    /** A holder process is SIGKILLed; how long until the waiter holds, in leases. */
    async function failover(): Promise<BenchRow[]> {
      // etcd checks for expired leases every 0.5 s whatever the TTL: 25 % of a 2 s lease, 5 % of
      // the 10 s used here (the default lease is 15 s). Quick runs keep 2 s to stay short.
      const leaseMs = quick ? 2_000 : 10_000
      const n = quick ? 2 : 8
      const here = (file: string) =>
        fileURLToPath(new URL(`../../test/etcd/${file}`, import.meta.url))
      const holderProcess = async (file: string, args: string[]) => {
        const child = fork(here(file), args, { execArgv: ['--import', 'tsx'], stdio: 'ignore' })
        await new Promise<void>((resolve, reject) => {
          child.on('message', (m: { type: string }) => m.type === 'elected' && resolve())
          child.once('exit', (code) => reject(new Error(`holder exited early (${code})`)))
        })
        return child
      }
      const kill = async (child: ReturnType<typeof fork>) => {
        const exited = new Promise((resolve) => child.once('exit', resolve))
        child.kill('SIGKILL')
        await exited
        return performance.now()
      }
      const ours: number[] = []
      for (let i = 0; i < n; i++) {
        const resource = name('failover')
        const child = await holderProcess('candidate.ts', [
          server.endpoint,
          prefix,
          resource,
          String(leaseMs),
        ])
        // The waiter's own lease is long: it must be woken by the dead holder's key going.
        const waiter = new Election(backend(), resource, { leaseMs: 60_000 })
        waiter.on('error', () => {})
        let heldAt = 0
        const waiting = waiter.campaign().then(() => (heldAt = performance.now()))
        await sleep(200 + Math.random() * leaseMs) // any point of the holder's renewal cycle
        const killedAt = await kill(child)
        await waiting
        ours.push((heldAt - killedAt) / leaseMs)
        await waiter.close()
      }
      const theirs: number[] = []
      for (let i = 0; i < n; i++) {
        const election = name('failover')
        const child = await holderProcess('etcd3-candidate.ts', [
          server.endpoint,
          election,
          String(leaseMs / 1000),
        ])
        const waiter = client().election(election, 60).campaign('waiter')
        waiter.on('error', () => {})
        let heldAt = 0
        const waiting = waiter.wait().then(() => (heldAt = performance.now()))
        await sleep(200 + Math.random() * leaseMs)
        const killedAt = await kill(child)
        await waiting
        theirs.push((heldAt - killedAt) / leaseMs)
        await waiter.resign()
      }
      const note = `lease ${leaseMs} ms, SIGKILL to the waiter holding`
      return [
        summarize('crash failover', CONCLAVE, ours, 'x lease', note),
        summarize('crash failover', PEER, theirs, 'x lease', note),
      ]
    }

    /** gRPC messages etcd receives per second while `held` resources are held, and nothing else. */
    async function holding(held: number): Promise<BenchRow[]> {
      const leaseMs = 6_000 // both renew every 2 s (conclave: leaseMs / 3; etcd3: ttl / 3)
      const windowMs = quick ? 6_000 : 12_000
      const metric = `etcd messages/s holding ${held}`
      const rate = async () => {
        await sleep(leaseMs / 2) // past the campaigns' own traffic
        const m0 = await messagesReceived(server)
        await sleep(windowMs)
        return (((await messagesReceived(server)) - m0) * 1000) / windowMs
      }
      const row = (subject: string, value: number, setupMs: number): BenchRow => ({
        metric,
        subject,
        unit: 'msg/s',
        value,
        samples: 1,
        note: `${windowMs / 1000} s window, lease ${leaseMs / 1000} s; campaigns took ${(setupMs / 1000).toFixed(1)} s${held > 1 ? ' (clients with ETCD_CLIENT_DEFAULTS)' : ''}`,
      })
      const rows: BenchRow[] = []
      // conclave: every grant of a process through one backend.
      const b = backend(held > 1)
      const elections: Election[] = []
      let t0 = performance.now()
      await pool(held, 20, async () => {
        const e = new Election(b, name('held'), { leaseMs })
        elections.push(e)
        await e.campaign()
      })
      const oursSetup = performance.now() - t0
      const ours = await rate()
      rows.push(row(CONCLAVE, ours, oursSetup))
      await pool(elections.length, 100, (i) => elections[i]!.close())
      await b.close()
      // etcd3: one campaign per resource, each with its own lease kept alive. (Started all at
      // once, a thousand of them never finished: they are started 20 at a time.)
      const c = client(held > 1)
      const campaigns: ReturnType<ReturnType<Etcd3['election']>['campaign']>[] = []
      try {
        t0 = performance.now()
        let failed = 0
        await pool(held, 20, async () => {
          // A campaign whose lease runs out while thousands start fails: start another.
          for (let attempt = 1; ; attempt++) {
            const campaign = c.election(name('held'), leaseMs / 1000).campaign('me')
            campaign.on('error', () => {})
            campaigns.push(campaign)
            try {
              return await campaign.wait()
            } catch (error) {
              failed++
              if (attempt === 3) throw error
            }
          }
        })
        if (failed) log(`${metric} / ${PEER}: ${failed} campaigns failed and were started again`)
        const theirsSetup = performance.now() - t0
        rows.push(row(PEER, await rate(), theirsSetup))
      } catch (error) {
        log(`${metric} / ${PEER} failed: ${(error as Error).message}`)
      } finally {
        await pool(campaigns.length, 100, (i) => campaigns[i]!.resign().catch(() => {}))
      }
      return rows
    }
  },
}

export default suite
