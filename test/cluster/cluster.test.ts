import { afterAll, describe, expect, it } from 'vitest'
import { Election } from '../../src/election.js'
import { clusterBackend } from '../../src/backends/cluster/index.js'
import {
  BackendClosedError,
  isFinal,
  OptionsError,
  TicketsMismatchError,
} from '../../src/errors.js'
import { forkWorker, setupClusterPrimary, type TestWorker } from './fixture.js'

await setupClusterPrimary('json')
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

  it('closes a worker’s backend in the contract’s order: hooks first (calls still work), then every call fails with BackendClosedError', async () => {
    const { backend } = await fork() // a RemoteBackend over the real IPC channel of a worker
    const request = {
      resource: 'cluster/close',
      candidate: 'closer',
      tickets: 1,
      leaseMs: 600_000,
      metadata: null,
    }
    expect((await backend.acquire(request)).acquired).toBe(true)
    const order: string[] = []
    backend.onClose(async () => {
      order.push('hook')
      // The core releases its grants here: the backend must still answer.
      await backend.release({ resource: request.resource, candidate: request.candidate })
      order.push('released')
    })
    const removed = backend.onClose(async () => void order.push('removed hook'))
    removed()
    await Promise.all([backend.close(), backend.close()])
    expect(order).toEqual(['hook', 'released'])
    const here = clusterBackend()
    expect(await here.holders(request.resource)).toEqual([])
    const failure = backend.acquire(request)
    await expect(failure).rejects.toBeInstanceOf(BackendClosedError)
    await expect(failure).rejects.toMatchObject({ code: 'ERR_CONCLAVE_CLOSED' })
    await expect(backend.holders(request.resource)).rejects.toMatchObject({
      code: 'ERR_CONCLAVE_CLOSED',
    })
    await here.close()
  })

  it('closes the primary’s own handle the same way, leaving the shared state and other handles alone', async () => {
    const mine = clusterBackend()
    const other = clusterBackend()
    const request = {
      resource: 'cluster/primary-close',
      candidate: 'primary',
      tickets: 1,
      leaseMs: 600_000,
      metadata: null,
    }
    expect((await mine.acquire(request)).acquired).toBe(true)
    let released = false
    mine.onClose(async () => {
      await mine.release({ resource: request.resource, candidate: request.candidate })
      released = true
    })
    await mine.close()
    expect(released).toBe(true)
    await expect(mine.holders(request.resource)).rejects.toMatchObject({
      code: 'ERR_CONCLAVE_CLOSED',
    })
    expect(await other.holders(request.resource)).toEqual([])
    await other.close()
  })

  it('hands the hub’s final errors to a worker as the same class, code and fields, so they stay final', async () => {
    const [a, b] = await Promise.all([fork(), fork()])
    const request = {
      resource: 'cluster/tickets',
      candidate: 'a',
      tickets: 1,
      leaseMs: 60_000,
      metadata: null,
    }
    expect((await a.backend.acquire(request)).acquired).toBe(true)
    // hub -> the worker's RemoteBackend -> (the test's driver hub in that worker) -> here
    const mismatch = await b.backend
      .acquire({ ...request, candidate: 'b', tickets: 2 })
      .catch((error: unknown) => error)
    expect(mismatch).toBeInstanceOf(TicketsMismatchError)
    expect(mismatch).toMatchObject({
      code: 'ERR_CONCLAVE_TICKETS_MISMATCH',
      resource: 'cluster/tickets',
      tickets: 2,
      held: 1,
    })
    expect((mismatch as Error).message).toMatch(
      /^"cluster\/tickets" is held with tickets 1; this candidate asked for tickets 2\..*\(from the cluster hub\)/,
    )
    expect(isFinal(mismatch)).toBe(true)

    const invalid = await b.backend
      .acquire({ ...request, resource: 'no spaces allowed' })
      .catch((error: unknown) => error)
    expect(invalid).toBeInstanceOf(OptionsError)
    expect(invalid).toMatchObject({
      code: 'ERR_CONCLAVE_OPTIONS',
      field: 'resource',
      value: 'no spaces allowed',
    })
    expect((invalid as OptionsError).rule).toMatch(/^A resource name is 1 to 200 characters/)
    expect(isFinal(invalid)).toBe(true)
  })
})
