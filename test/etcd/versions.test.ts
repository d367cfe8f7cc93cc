// etcd releases whose leases are unsafe across a leader change (an old leader revokes live
// leases when it resumes, etcd #15247; stale LeaseTimeToLive answers) get one warning per
// endpoint (CONCLAVE_ETCD_VERSION) when the cluster has several members. The test servers are
// Debian's etcd 3.4.23, an affected release: a 3-member cluster warns, a single member does not.
import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { etcdBackend, type EtcdBackend } from '../../src/backends/etcd/index.js'
import { unsafeLeases } from '../../src/backends/etcd/versions.js'
import { Election } from '../../src/election.js'
import { ETCD_VERSION_WARNING } from '../../src/errors.js'
import {
  startEtcd,
  startEtcdCluster,
  type EtcdCluster,
  type EtcdServer,
} from '../../testkit/index.js'
import { until } from './helpers.js'

const warnings: (Error & { code?: string })[] = []
const onWarning = (warning: Error & { code?: string }) => {
  if (warning.code === ETCD_VERSION_WARNING) warnings.push(warning)
}
let cluster: EtcdCluster
let single: EtcdServer
const prefix = `etcd-versions-${randomBytes(4).toString('hex')}/`

beforeAll(async () => {
  process.on('warning', onWarning)
  ;[cluster, single] = await Promise.all([startEtcdCluster(), startEtcd()])
})
afterAll(async () => {
  process.off('warning', onWarning)
  await Promise.all([cluster?.stop(), single?.stop()])
})

/** Two campaigns (each on its own backend) through `hosts`. */
async function campaignOn(hosts: string[]) {
  for (let i = 0; i < 2; i++) {
    const backend: EtcdBackend = etcdBackend({ hosts, prefix })
    const election = new Election(backend, `v/${randomBytes(4).toString('hex')}`, {
      leaseMs: 5_000,
    })
    try {
      await election.campaign()
    } finally {
      await election.close()
      await backend.close()
    }
  }
}

it('knows which releases have the lease bugs of a leader change', () => {
  for (const v of ['2.3.8', '3.3.27', '3.4.0', '3.4.23', '3.4.31', '3.5.0', '3.5.13'])
    expect([v, unsafeLeases(v)]).toEqual([v, true])
  for (const v of ['3.4.32', '3.4.37', '3.5.14', '3.5.21', '3.6.0', '3.6.4', '4.0.0', 'x'])
    expect([v, unsafeLeases(v)]).toEqual([v, false])
})

it('warns once per endpoint about a cluster of several members on an affected etcd', async () => {
  await campaignOn(cluster.endpoints)
  await until(() => warnings.length > 0, 5_000, 'the version warning')
  await campaignOn(cluster.endpoints)
  await new Promise((resolve) => setTimeout(resolve, 200))
  expect(warnings).toHaveLength(1)
  const [warning] = warnings
  expect(warning!.name).toBe('ConclaveWarning')
  expect(warning!.message).toMatch(/runs etcd 3\.4\.\d+/)
  expect(warning!.message).toMatch(/3 members/)
  expect(warning!.message).toMatch(/#15247/)
  expect(warning!.message).toMatch(/3\.4\.32, 3\.5\.14 or later/)
})

it('says nothing for a single member, which has no leader change', async () => {
  const before = warnings.length
  await campaignOn([single.endpoint])
  await new Promise((resolve) => setTimeout(resolve, 500))
  expect(warnings.length).toBe(before)
})
