// conclave/etcd against the etcd3 package's own Election, one after another on one private etcd.
import { randomBytes } from 'node:crypto'
import { Etcd3 } from 'etcd3'
import { etcdBackend } from '../../src/backends/etcd/index.js'
import { Election } from '../../src/election.js'
import { startEtcd } from '../../testkit/index.js'
import { ownCpuMs, sleep, uniqueKey } from '../probes.js'
import { electionScenarios, type Scenario, type Subject } from '../scenarios.js'
import { median, notAvailable, single, summarize } from '../stats.js'
import { defineSuite } from '../suite.js'
import { ETCD_SUBJECTS, etcdSubject, type EtcdTarget } from '../subjects/etcd.js'

/** An etcd subject, with what the etcd-only scenarios below need. */
interface EtcdSubject extends Subject {
  /** A client of its own for the baseline: one etcd put per call. */
  putClient?(): { put(key: string): Promise<void>; close(): void }
  /** A backend of its own (one process's worth) for many elections at once. */
  manyBackend?(): { elections(n: number, leaseMs: number): Election[]; close(): Promise<void> }
}

/** etcd's cheapest write, a put, next to conclave's uncontended acquire, alternately. */
const putBaseline: Scenario<EtcdSubject> = {
  id: 'put-baseline',
  title: 'uncontended acquire vs an etcd put',
  needs: ['putClient', 'candidate'],
  async run(subject, { quick }) {
    const n = quick ? 100 : 1_000
    const warmup = 10
    const client = subject.putClient!()
    const c = await subject.candidate!()
    const puts: number[] = []
    const acquires: number[] = []
    try {
      const resource = uniqueKey('baseline')
      for (let i = 0; i < n + warmup; i++) {
        const t0 = performance.now()
        await client.put(`${resource}/put`)
        const t1 = performance.now()
        const give = await c.acquire(resource, 10_000)
        const t2 = performance.now()
        await give()
        if (i < warmup) continue
        puts.push(t1 - t0)
        acquires.push(t2 - t1)
      }
    } finally {
      client.close()
      await c.close()
    }
    return [
      summarize('etcd put', puts),
      summarize('uncontended acquire', acquires),
      single('acquire / put (p50)', median(acquires) / median(puts), 'x', n),
    ]
  },
}

/** 10,000 campaigns on distinct resources started at once on one backend. */
const manyAtOnce: Scenario<EtcdSubject> = {
  id: 'many-at-once',
  title: '10,000 campaigns started at once, one backend',
  needs: ['manyBackend'],
  async run(subject, { quick, log }) {
    const n = quick ? 1_000 : 10_000
    const capMs = 120_000
    const many = subject.manyBackend!()
    const elections = many.elections(n, 10_000)
    let errors = 0
    for (const e of elections) e.on('error', () => errors++)
    let won = 0
    let within10s = 0
    const t0 = performance.now()
    const all = Promise.all(
      elections.map((e) =>
        e.campaign().then(
          () => {
            won++
            if (performance.now() - t0 <= 10_000) within10s++
          },
          () => {},
        ),
      ),
    )
    const finished = await Promise.race([all.then(() => true), sleep(capMs).then(() => false)])
    const tookMs = performance.now() - t0
    log(`${subject.name}: ${won} of ${n} won in ${(tookMs / 1000).toFixed(1)} s, ${errors} errors`)
    await Promise.all(elections.map((e) => e.close()))
    await sleep(1_000)
    const cpu0 = ownCpuMs()
    await sleep(3_000)
    const idle = ((ownCpuMs() - cpu0) / 3_000) * 100
    await many.close()
    const note = `${n} resources, lease 10 s`
    return [
      finished
        ? single('all won after', tookMs, 'ms', n, note)
        : notAvailable('all won after', 'ms', `${won} of ${n} won within ${capMs / 1000} s`),
      single('won within 10 s', within10s, 'campaigns', n),
      single('errors reported', errors, 'errors', n),
      single('CPU after they closed', idle, '% of a core', n, '1 s after close, over 3 s'),
    ]
  },
}

/** The etcd suite: conclave/etcd and etcd3's Election × the election scenarios and two more. */
export default defineSuite<EtcdSubject>({
  name: 'etcd',
  scenarios: [...electionScenarios, putBaseline, manyAtOnce],
  async setup() {
    const server = await startEtcd()
    const admin = new Etcd3({ hosts: server.endpoint })
    const target: EtcdTarget = {
      host: server.host,
      port: server.port,
      pid: server.pid,
      admin,
      prefix: `bench-${randomBytes(4).toString('hex')}/`,
    }
    const open = (name: (typeof ETCD_SUBJECTS)[number]): EtcdSubject => {
      const subject: EtcdSubject = etcdSubject(name, target)
      if (name !== 'conclave/etcd') {
        return {
          ...subject,
          cannot: {
            ...subject.cannot,
            'put-baseline': 'measured once, with conclave/etcd (the put is the same)',
            'many-at-once': 'not run: a lease and a keepalive stream per campaign',
          },
        }
      }
      return {
        ...subject,
        putClient() {
          const client = new Etcd3({ hosts: server.endpoint })
          return {
            put: async (key) => void (await client.put(key).value('x')),
            close: () => client.close(),
          }
        },
        manyBackend() {
          const backend = etcdBackend({ hosts: server.endpoint, prefix: target.prefix })
          const base = uniqueKey('many')
          return {
            elections: (n, leaseMs) =>
              Array.from(
                { length: n },
                (_, i) => new Election(backend, `${base}/${i}`, { leaseMs }),
              ),
            close: () => backend.close(),
          }
        },
      }
    }
    return {
      subjects: ETCD_SUBJECTS.map((name) => ({ name, open: () => open(name) })),
      async teardown() {
        admin.close()
        await server.stop()
      },
    }
  },
})
