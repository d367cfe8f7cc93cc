// Separate processes of one `local` app (testkit/local-peer.ts), each driven from here as a
// Backend: every call crosses IPC to the peer, then the peer's unix socket to the hub (or the
// hub in that peer). For the conformance suite, fault tests (kill -9 the hub, SIGSTOP it), and
// bench. No vitest imports.
import { type ChildProcess, fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { Backend } from '../src/backend.js'
import { RemoteBackend } from '../src/backends/cluster/remote.js'
import type { LocalBackendOptions } from '../src/backends/local/index.js'
import { bundled } from './bundled.js'
import { makeTempDir, removeDir } from './process.js'

export const LOCAL_PEER_FILE = fileURLToPath(new URL('./local-peer.ts', import.meta.url))

/** A peer process and its backend as driven from here. */
export interface LocalPeer {
  child: ChildProcess
  pid: number
  backend: Backend
  /** Whether the peer hosts the hub now. */
  isHub(): Promise<boolean>
  /** SIGKILL, and wait for the exit. */
  kill(): Promise<void>
}

/** A private directory for one test's apps (mode 0700), removed by the returned function. */
export function localDir(): { dir: string; remove(): Promise<void> } {
  const dir = makeTempDir('conclave-local')
  return { dir, remove: () => removeDir(dir) }
}

/** Starts one peer; resolves once it reached (or became) the hub. */
export async function startLocalPeer(
  options: LocalBackendOptions,
  spawnOptions: { uid?: number; gid?: number } = {},
): Promise<LocalPeer> {
  // Bundled, under plain node: a peer starts in a fraction of tsx's time (testkit/bundled.ts).
  const child = fork(await bundled(LOCAL_PEER_FILE), [JSON.stringify(options)], {
    execArgv: [],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    ...spawnOptions,
  })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  // A send racing the peer's death fails that call (RemoteBackend's timeout), not the process.
  child.on('error', () => {})
  await new Promise<void>((resolve, reject) => {
    const onMessage = (m: unknown) => {
      const message = m as { 'peer-ready'?: boolean; 'peer-error'?: string }
      if (message['peer-ready']) {
        child.off('message', onMessage)
        resolve()
      } else if (message['peer-error']) reject(new Error(message['peer-error']))
    }
    child.on('message', onMessage)
    child.once('exit', (code) => reject(new Error(`local peer exited early (${code})`)))
  })
  const remote = new RemoteBackend(
    {
      send: (m) => {
        if (!child.connected) throw new Error('the local peer has exited')
        child.send(m)
      },
      onMessage: (fn) => (child.on('message', fn), () => child.off('message', fn)),
      onClose: (fn) => (child.on('exit', fn), () => child.off('exit', fn)),
    },
    { name: 'local', namespace: 'conclave-driver', requestTimeoutMs: 5_000 },
  )
  const kill = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await exited
  }
  const backend: Backend = {
    name: 'local',
    acquire: (r) => remote.acquire(r),
    renew: (r) => remote.renew(r),
    release: (r) => remote.release(r),
    holders: (r) => remote.holders(r),
    watch: (r, fn) => remote.watch(r, fn),
    onClose: (hook) => remote.onClose(hook),
    async close() {
      await remote.close()
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
      await exited
    },
  }
  return {
    child,
    pid: child.pid!,
    backend,
    kill,
    isHub: () =>
      new Promise((resolve) => {
        const onMessage = (m: unknown) => {
          const answer = (m as { 'peer-answer'?: boolean })['peer-answer']
          if (answer === undefined) return
          child.off('message', onMessage)
          resolve(answer)
        }
        child.on('message', onMessage)
        child.send({ 'peer-query': 'isHub' })
      }),
  }
}

/** Peers started ahead of need (a peer takes a fraction of a second to start). */
export function localPool(
  options: LocalBackendOptions,
  spares = 2,
): { next(): Promise<LocalPeer>; close(): Promise<void> } {
  const ready: Promise<LocalPeer>[] = Array.from({ length: spares }, () => startLocalPeer(options))
  const all: Promise<LocalPeer>[] = [...ready]
  return {
    next() {
      const peer = startLocalPeer(options)
      ready.push(peer)
      all.push(peer)
      return ready.shift()!
    },
    async close() {
      await Promise.all(all.map(async (p) => (await p.catch(() => undefined))?.kill()))
    },
  }
}
