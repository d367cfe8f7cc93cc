import cluster, { type Worker } from 'node:cluster'
import { fileURLToPath } from 'node:url'

/** Makes the test process a cluster primary whose workers run test/agent/worker.ts. */
export function setupAgentPrimary(serialization: 'json' | 'advanced'): void {
  cluster.setupPrimary({
    exec: fileURLToPath(new URL('./worker.ts', import.meta.url)),
    execArgv: ['--import', 'tsx'],
    serialization,
    silent: false,
  })
}

export interface TestWorker {
  worker: Worker
  /** Runs a command in the worker (see worker.ts) and resolves with its reply. */
  run(op: string, fields?: Record<string, unknown>): Promise<Reply>
}

export type Reply =
  | { ok: true; value: unknown }
  | {
      ok: false
      error: {
        name: string
        message: string
        code?: string
        retryable?: boolean
        path?: string
        stack?: string
        className?: string
      }
    }

let nextId = 0

export async function forkWorker(env: Record<string, string> = {}): Promise<TestWorker> {
  const worker = cluster.fork(env)
  await new Promise<void>((resolve, reject) => {
    const onMessage = (m: unknown) => {
      if ((m as { 'agent-test-ready'?: boolean })['agent-test-ready']) {
        worker.off('message', onMessage)
        worker.off('exit', onExit)
        resolve()
      }
    }
    const onExit = (code: number) => reject(new Error(`test worker exited early (${code})`))
    worker.on('message', onMessage)
    worker.once('exit', onExit)
  })
  return {
    worker,
    run(op, fields = {}) {
      const id = ++nextId
      return new Promise<Reply>((resolve, reject) => {
        const onMessage = (m: unknown) => {
          const reply = (m as { 'agent-test-reply'?: Reply & { id: number } })['agent-test-reply']
          if (reply?.id === id) {
            worker.off('message', onMessage)
            worker.off('exit', onExit)
            resolve(reply)
          }
        }
        const onExit = () => {
          worker.off('message', onMessage)
          reject(new Error(`worker ${worker.id} exited during ${op}`))
        }
        worker.on('message', onMessage)
        worker.once('exit', onExit)
        worker.send({ 'agent-test': { id, op, ...fields } })
      })
    },
  }
}

export async function forkWorkers(n: number, env?: Record<string, string>): Promise<TestWorker[]> {
  return Promise.all(Array.from({ length: n }, () => forkWorker(env)))
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

/** The value of a successful reply; fails the test with the remote error otherwise. */
export function value<T>(reply: Reply): T {
  if (!reply.ok)
    throw new Error(`expected success, got ${reply.error.name}: ${reply.error.message}`)
  return reply.value as T
}

export function failure(reply: Reply): Extract<Reply, { ok: false }>['error'] {
  if (reply.ok) throw new Error(`expected a failure, got ${JSON.stringify(reply.value)}`)
  return reply.error
}
