// One client per member when the backend is given several hosts: a call goes to one member and
// moves to the next after memberTimeoutMs or an error; the option is checked; when no member
// answers, the error names each one and comes within timeoutMs.
import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { etcdBackend } from '../../src/backends/etcd/index.js'
import { BackendTimeoutError, OptionsError } from '../../src/errors.js'
import { startEtcdCluster, type EtcdCluster } from '../../testkit/index.js'

let cluster: EtcdCluster
const prefix = `etcd-members-${randomBytes(4).toString('hex')}/`

beforeAll(async () => {
  cluster = await startEtcdCluster({ proxied: true })
})
afterAll(async () => {
  await cluster?.stop()
})

it('checks memberTimeoutMs', () => {
  for (const bad of [-1, 0, 5, 'x', 1.5]) {
    expect(() => etcdBackend({ hosts: cluster.endpoints, memberTimeoutMs: bad as number })).toThrow(
      OptionsError,
    )
  }
  expect(() => etcdBackend({ hosts: cluster.endpoints, memberTimeoutMs: 0 })).toThrow(
    /memberTimeoutMs/,
  )
})

it('moves a call to the next member when the first one’s path hangs', async () => {
  const backend = etcdBackend({ hosts: cluster.endpoints, prefix, memberTimeoutMs: 300 })
  try {
    cluster.members[0]!.proxy!.cut({ mode: 'blackhole' })
    const started = performance.now()
    const result = await backend.acquire({
      resource: `hang/${randomBytes(4).toString('hex')}`,
      candidate: 'a',
      leaseMs: 2_000,
      tickets: 1,
      metadata: null,
    })
    expect(result.acquired).toBe(true)
    // The hung member cost one try per call (grant, then the acquire), not the call deadline.
    expect(performance.now() - started).toBeLessThan(4_000)
  } finally {
    cluster.members[0]!.proxy!.restore()
    await backend.close()
  }
})

it('fails within timeoutMs naming every member when none answers', async () => {
  const backend = etcdBackend({
    hosts: cluster.endpoints,
    prefix,
    timeoutMs: 1_500,
    memberTimeoutMs: 200,
  })
  for (const m of cluster.members) m.proxy!.cut({ mode: 'blackhole' })
  try {
    const started = performance.now()
    const error = await backend.holders('nobody').catch((e: unknown) => e)
    expect(performance.now() - started).toBeLessThan(2_500)
    expect(error).toBeInstanceOf(BackendTimeoutError)
    for (const m of cluster.members) expect(String(error)).toContain(`127.0.0.1:${m.proxy!.port}`)
    expect(String(error)).toMatch(/read failed on 3 of 3 members within 1500 ms/)
  } finally {
    for (const m of cluster.members) m.proxy!.restore()
    await backend.close()
  }
})
