// conclave/etcd against the etcd3 package's own Election, one after another on one private etcd,
// and etcd's cheapest write (a put) as the baseline of the uncontended acquire.
import { randomBytes } from 'node:crypto'
import { Etcd3 } from 'etcd3'
import { startEtcd } from '../../testkit/index.js'
import { electionScenarios, type Subject } from '../scenarios.js'
import { defineSuite } from '../suite.js'
import { ETCD_SUBJECTS, etcdPutBaseline, etcdSubject, type EtcdTarget } from '../subjects/etcd.js'

/** The etcd suite: conclave/etcd, etcd3's Election and the put baseline × the election scenarios. */
export default defineSuite<Subject>({
  name: 'etcd',
  scenarios: electionScenarios,
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
    return {
      subjects: [
        ...ETCD_SUBJECTS.map((name) => ({ name, open: () => etcdSubject(name, target) })),
        { name: 'baseline: etcd put', open: () => etcdPutBaseline(target) },
      ],
      async teardown() {
        admin.close()
        await server.stop()
      },
    }
  },
})
