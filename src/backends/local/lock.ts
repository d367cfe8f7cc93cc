/**
 * The hub lock: whoever holds it may bind the hub's socket, so the probe -> unlink -> bind of a
 * stale socket never races a second process doing the same. A lock the kernel frees when its
 * holder dies, so a killed hub never blocks its successor:
 * - `abstract` (Linux): an abstract unix socket name (no file); binding it is atomic, and the
 *   kernel drops it with the process. Abstract names live in a network namespace, so processes
 *   in containers with separate network namespaces do not share it (see docs/local.md).
 * - `pidfile` (other systems): a file created exclusively, naming the holder's pid; taken over
 *   only when that pid no longer exists. Best effort: Node has no flock.
 * - `pipe` (Windows): no lock; the named pipe itself cannot be bound twice and vanishes with
 *   its process.
 */
import {
  closeSync,
  fsyncSync,
  openSync,
  readFileSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs'
import { createServer } from 'node:net'
import type { LocalSettings } from './options.js'

/** A held lock. */
export interface HubLock {
  release(): void
}

/** Takes the lock, or resolves undefined when a live process holds it. */
export async function tryLock(settings: LocalSettings): Promise<HubLock | undefined> {
  if (settings.lock === 'pipe') return { release() {} }
  if (settings.lock === 'abstract') return abstractLock(settings.lockAddress)
  return pidLock(settings.lockAddress)
}

function abstractLock(name: string): Promise<HubLock | undefined> {
  return new Promise((resolve, reject) => {
    // Nobody should connect to a lock; anyone who does is hung up on at once.
    const server = createServer((socket) => socket.destroy())
    server.once('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'EADDRINUSE') resolve(undefined)
      else reject(error)
    })
    // exclusive: a node:cluster worker's plain listen is shared through the primary (PM2
    // cluster mode), which would hand the same lock to every worker.
    server.listen({ path: name, exclusive: true }, () => {
      server.unref()
      resolve({ release: () => void server.close() })
    })
  })
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** How long a pid file may stay without its pid before it counts as left by a dead maker. */
const UNWRITTEN_STALE_MS = 10_000

/** Whether the file at `path` was last written more than `ms` ago (false if it is gone). */
function olderThan(path: string, ms: number): boolean {
  try {
    return statSync(path).mtimeMs < Date.now() - ms
  } catch {
    return false
  }
}

function pidLock(path: string): HubLock | undefined {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o600)
      writeSync(fd, String(process.pid))
      fsyncSync(fd)
      closeSync(fd)
      return {
        release() {
          try {
            if (readFileSync(path, 'utf8') === String(process.pid)) unlinkSync(path)
          } catch {
            // Gone already.
          }
        },
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
    }
    let text: string
    try {
      text = readFileSync(path, 'utf8')
    } catch {
      continue // removed meanwhile: try again
    }
    // Empty or partial: its maker is between the exclusive create and the write of its pid, so
    // held; unless it stayed so for long (its maker died there), then it is stale.
    if (!/^\d+$/.test(text) && !olderThan(path, UNWRITTEN_STALE_MS)) return undefined
    const holder = Number(text)
    if (/^\d+$/.test(text) && holder > 0 && alive(holder)) return undefined
    try {
      unlinkSync(path)
    } catch {
      // Another process removed it first; the exclusive create decides.
    }
  }
  return undefined
}
