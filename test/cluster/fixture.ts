import cluster, { type Worker } from 'node:cluster'
import { fileURLToPath } from 'node:url'
import type { Backend } from '../../src/backend.js'
import { serveCluster } from '../../src/backends/cluster/index.js'
import { RemoteBackend } from '../../src/backends/cluster/remote.js'
import { bundled } from '../../testkit/bundled.js'

/**
 * Makes the test process a cluster primary whose workers run test/cluster/worker.ts, bundled,
 * under plain node: a worker starts in a fraction of tsx's time (testkit/bundled.ts).
 */
export async function setupClusterPrimary(
  serialization: 'json' | 'advanced' = 'json',
): Promise<void> {
  cluster.setupPrimary({
    exec: await bundled(fileURLToPath(new URL('./worker.ts', import.meta.url))),
    execArgv: [],
    serialization,
    silent: false,
  })
  serveCluster()
}

export interface TestWorker {
  worker: Worker
  /** The worker's cluster backend, driven from here. Closing it kills the worker. */
  backend: Backend
}

export async function forkWorker(): Promise<TestWorker> {
  const worker = cluster.fork()
  await new Promise<void>((resolve, reject) => {
    const onMessage = (m: unknown) => {
      if ((m as { 'test-ready'?: boolean })['test-ready']) {
        worker.off('message', onMessage)
        resolve()
      }
    }
    worker.on('message', onMessage)
    worker.once('exit', (code) => reject(new Error(`test worker exited early (${code})`)))
  })
  const remote = new RemoteBackend(
    {
      send: (m) => void worker.send(m),
      onMessage: (fn) => (worker.on('message', fn), () => worker.off('message', fn)),
      onClose: (fn) => (worker.on('exit', fn), () => worker.off('exit', fn)),
    },
    { name: 'cluster', namespace: 'conclave-driver', requestTimeoutMs: 5_000 },
  )
  const backend: Backend = {
    name: 'cluster',
    acquire: (r) => remote.acquire(r),
    renew: (r) => remote.renew(r),
    release: (r) => remote.release(r),
    holders: (r) => remote.holders(r),
    watch: (r, fn) => remote.watch(r, fn),
    readRecord: (r, k) => remote.readRecord(r, k),
    writeRecord: (r) => remote.writeRecord(r),
    now: () => remote.now(),
    onClose: (hook) => remote.onClose(hook),
    async close() {
      await remote.close()
      await stopWorker(worker)
    },
  }
  return { worker, backend }
}

export async function stopWorker(
  worker: Worker,
  signal: NodeJS.Signals = 'SIGTERM',
): Promise<void> {
  if (worker.isDead()) return
  const exited = new Promise((resolve) => worker.once('exit', resolve))
  worker.process.kill(signal)
  await exited
}

/**
 * Workers forked ahead of need: `next()` hands out the oldest (ready by then, usually) and forks
 * a replacement, so a test that asks for a backend mid-lease is not held up by a worker's
 * start-up (a fraction of a second, more on a loaded machine: more than some leases' renewal
 * interval).
 */
export function workerPool(spares = 2): { next(): Promise<Backend>; close(): Promise<void> } {
  const ready: Promise<TestWorker>[] = Array.from({ length: spares }, () => forkWorker())
  return {
    async next() {
      ready.push(forkWorker())
      return (await ready.shift()!).backend
    },
    async close() {
      const left = ready.splice(0)
      await Promise.all(left.map(async (w) => (await w).backend.close().catch(() => {})))
    },
  }
}
