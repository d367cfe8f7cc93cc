import { afterAll, describe, expect, it } from 'vitest'
import { Election } from '../../src/election.js'
import { clusterBackend } from '../../src/backends/cluster/index.js'
import { forkWorker, setupClusterPrimary, type TestWorker } from './fixture.js'

setupClusterPrimary('json')
const workers: TestWorker[] = []
const fork = async () => {
  const w = await forkWorker()
  workers.push(w)
  return w
}
afterAll(async () => {
  await Promise.all(workers.map((w) => w.backend.close().catch(() => {})))
})

describe('cluster backend', () => {
  it('drops the grants of a worker that is killed at once, without waiting for the lease', async () => {
    const holder = await fork()
    const granted = await holder.backend.acquire({
      resource: 'cluster/killed',
      candidate: 'holder',
      tickets: 1,
      leaseMs: 600_000,
      metadata: null,
    })
    expect(granted.acquired).toBe(true)
    // The waiter lives in the primary; its fallback poll is its 10-minute lease.
    const waiter = new Election(clusterBackend(), 'cluster/killed', { leaseMs: 600_000 })
    const term = waiter.campaign()
    await new Promise((r) => setTimeout(r, 200))
    expect((await waiter.leaders()).map((h) => h.candidate)).toEqual(['holder'])
    holder.worker.process.kill('SIGKILL')
    const won = await term
    if (granted.acquired) expect(won.token).toBeGreaterThan(granted.token)
    await waiter.close()
  })

  it('refuses a candidate id that another worker holds, so two processes never share a grant', async () => {
    const [a, b] = await Promise.all([fork(), fork()])
    const request = {
      resource: 'cluster/shared-id',
      candidate: 'scheduler',
      tickets: 1,
      leaseMs: 60_000,
      metadata: null,
    }
    const first = await a.backend.acquire(request)
    expect(first.acquired).toBe(true)
    await expect(b.backend.acquire(request)).rejects.toMatchObject({
      code: 'ERR_CONCLAVE_CANDIDATE_IN_USE',
    })
    // The holder's own retry is fine, and once it releases the id is free for another process.
    expect((await a.backend.acquire(request)).acquired).toBe(true)
    await a.backend.release({ resource: request.resource, candidate: 'scheduler' })
    const second = await b.backend.acquire(request)
    expect(second.acquired && first.acquired && second.token > first.token).toBe(true)
  })

  it('answers malformed IPC messages with an error and keeps serving', async () => {
    const { worker } = await fork()
    const bad = [
      { conclave: 1 },
      { conclave: 1, type: 'request', id: 'a1', op: 'explode', args: {} },
      { conclave: 1, type: 'request', id: 'a2', op: 'acquire', args: 5 },
      { conclave: 1, type: 'request', id: 'a3', op: 'acquire', args: { resource: 'ok/name' } },
      { conclave: 1, type: 'request', id: 'a4', op: 'renew', args: [null] },
      {
        conclave: 1,
        type: 'request',
        id: 'a5',
        op: 'acquire',
        args: { resource: 'a b', candidate: 'c', tickets: 1, leaseMs: 1000, metadata: null },
      },
      {
        conclave: 1,
        type: 'request',
        id: 'a6',
        op: 'watch',
        args: { resource: 'ok/name', watch: 42 },
      },
      {
        conclave: 1,
        type: 'request',
        id: 'x'.repeat(500),
        op: 'holders',
        args: { resource: 'ok/name' },
      },
      { conclave: 1, type: 'response', id: 'a7', ok: true },
      { unrelated: 'the application may use the channel too' },
      { conclave: 1, type: 'request', id: 'good', op: 'holders', args: { resource: 'ok/name' } },
    ]
    const replies = await new Promise<Record<string, unknown>[]>((resolve) => {
      const onMessage = (m: unknown) => {
        const result = (m as { 'test-raw-result'?: Record<string, unknown>[] })['test-raw-result']
        if (result) {
          worker.off('message', onMessage)
          resolve(result)
        }
      }
      worker.on('message', onMessage)
      worker.send({ 'test-raw': bad })
    })
    const byId = new Map(replies.map((r) => [r.id, r]))
    for (const id of ['a1', 'a2', 'a3', 'a4', 'a5', 'a6', 'a7']) {
      expect(byId.get(id)?.ok, id).toBe(false)
      expect((byId.get(id)?.error as { message: string }).message.length).toBeGreaterThan(10)
    }
    expect((byId.get('a1')?.error as { message: string }).message).toMatch(/Invalid op: "explode"/)
    expect((byId.get('a5')?.error as { code: string }).code).toBe('ERR_CONCLAVE_OPTIONS')
    // Without a usable id the error still comes back, addressed to nobody.
    expect(replies.filter((r) => r.id === null).length).toBe(2)
    expect(byId.get('good')).toMatchObject({ ok: true, value: [] })
    expect(worker.isConnected()).toBe(true)
  })
})
