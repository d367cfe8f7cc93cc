// conclave/etcd against the etcd3 package's own Election, one after another on one private etcd,
// etcd's cheapest write (a put) as the baseline of the uncontended acquire, and many at once.
import { randomBytes } from 'node:crypto'
import { Etcd3 } from 'etcd3'
import { etcdBackend } from '../../src/backends/etcd/index.js'
import { Election } from '../../src/election.js'
import { startEtcd } from '../../testkit/index.js'
import { ownCpuMs, sleep, uniqueKey } from '../probes.js'
import { electionScenarios, type Scenario, type Subject } from '../scenarios.js'
import { notAvailable, single } from '../stats.js'
import { defineSuite } from '../suite.js'
import { ETCD_SUBJECTS, etcdPutBaseline, etcdSubject, type EtcdTarget } from '../subjects/etcd.js'

/** An etcd subject, with what the etcd-only scenarios below need. */
interface EtcdSubject extends Subject {
  /** A backend of its own (one process's worth) for many elections at once. */
  manyBackend?(): { elections(n: number, leaseMs: number): Election[]; close(): Promise<void> }
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

/** The etcd suite: conclave/etcd, etcd3's Election and the put baseline × the scenarios. */
export default defineSuite<EtcdSubject>({
  name: 'etcd',
  scenarios: [...electionScenarios, manyAtOnce],
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
            'many-at-once': 'not run: a lease and a keepalive stream per campaign',
          },
        }
      }
      return {
        ...subject,
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
      subjects: [
        ...ETCD_SUBJECTS.map((name) => ({ name, open: () => open(name) })),
        { name: 'baseline: etcd put', open: () => etcdPutBaseline(target) },
      ],
      async teardown() {
        admin.close()
        await server.stop()
      },
    }
  },
})
