/**
 * Telling a dead client process from a live one, so the hub can free a crashed holder's grants
 * at once instead of after a lease. A closed unix socket is no proof (a reset, an oversized
 * line: its process may live on and act on its term), so the client says who it is when it
 * connects (its pid, its pid namespace, its start time) and, when the socket closes, the hub
 * frees its grants only if it is sure that process is gone. Anything uncertain is "not sure":
 * the grants run out their leases as before.
 *
 * Sure means, on Linux, in the hub's own pid namespace (the pid means the same process to both):
 * kill(pid, 0) says ESRCH; or /proc/PID/stat shows another start time (the pid was reused); or
 * every thread of PID is a zombie (it exited; its parent has not reaped it yet). Another
 * namespace (containers sharing a volume), EPERM, a /proc that is not this namespace's, or no
 * /proc at all (other systems) are never sure.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs'

/** The key of the local backend's own messages on its socket (the hello). */
export const LOCAL_NAMESPACE = 'conclave-local'

/** Who a client process is, as it tells the hub when it connects. */
export interface ProcessIdentity {
  pid: number
  /** `readlink /proc/self/ns/pid` (e.g. `pid:[4026531836]`); null where there is none. */
  pidNs: string | null
  /** Field 22 of /proc/self/stat (clock ticks after boot); null where there is none. */
  startTime: string | null
}

/** What the hub can say about a client process. */
export type Liveness = 'dead' | 'alive' | 'unknown'

function readNs(): string | null {
  try {
    return readlinkSync('/proc/self/ns/pid')
  } catch {
    return null
  }
}

/** The fields after the command name of /proc/PID/stat (the name may hold spaces and parens). */
function statFields(pid: number | 'self'): string[] | null {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return text.slice(text.lastIndexOf(')') + 2).split(' ')
  } catch {
    return null
  }
}

/** Field 22 (starttime) of /proc/PID/stat: index 19 after the name (fields 3, 4, ...). */
function startTimeOf(pid: number | 'self'): string | null {
  return statFields(pid)?.[19] ?? null
}

/** This process's identity (computed once: none of it changes while the process lives). */
let self: ProcessIdentity | undefined
export function selfIdentity(): ProcessIdentity {
  self ??= { pid: process.pid, pidNs: readNs(), startTime: startTimeOf('self') }
  return { ...self }
}

/** Parses a client's claim; undefined when it is not one (the hub then is never sure). */
export function parseIdentity(value: unknown): ProcessIdentity | undefined {
  if (typeof value !== 'object' || value === null) return undefined
  const { pid, pidNs, startTime } = value as Record<string, unknown>
  if (!Number.isSafeInteger(pid) || (pid as number) <= 0) return undefined
  if (pidNs !== null && (typeof pidNs !== 'string' || !/^pid:\[\d+\]$/.test(pidNs))) {
    return undefined
  }
  if (startTime !== null && (typeof startTime !== 'string' || !/^\d{1,20}$/.test(startTime))) {
    return undefined
  }
  return { pid: pid as number, pidNs, startTime }
}

/**
 * Whether the process `who` is dead, alive, or unknown to this process (see the module comment).
 * `alive` includes a process that is exiting but not a zombie yet: ask again shortly.
 */
export function liveness(who: ProcessIdentity): Liveness {
  const here = selfIdentity()
  // Both must be in one pid namespace, and this process's /proc must be that namespace's.
  if (here.pidNs === null || who.pidNs === null || who.startTime === null) return 'unknown'
  if (who.pidNs !== here.pidNs) return 'unknown'
  try {
    if (readlinkSync('/proc/self') !== String(process.pid)) return 'unknown'
  } catch {
    return 'unknown'
  }
  if (who.pid === process.pid) return 'alive'
  try {
    process.kill(who.pid, 0)
  } catch (error) {
    // EPERM: someone's process we may not signal; alive as far as we can tell.
    return (error as NodeJS.ErrnoException).code === 'ESRCH' ? 'dead' : 'unknown'
  }
  const fields = statFields(who.pid)
  // Gone between the two looks (ESRCH a moment later): dead; unreadable otherwise: unknown.
  if (fields === null) {
    try {
      process.kill(who.pid, 0)
      return 'unknown'
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === 'ESRCH' ? 'dead' : 'unknown'
    }
  }
  if (fields[19] !== who.startTime) return 'dead' // the pid was reused: ours is gone
  if (allZombies(who.pid)) return 'dead'
  return 'alive'
}

/**
 * Every thread of `pid` has exited (state Z or X). The leader alone being a zombie is not
 * enough: it can exit while other threads of its process still run.
 */
function allZombies(pid: number): boolean {
  let tasks: string[]
  try {
    tasks = readdirSync(`/proc/${pid}/task`)
  } catch {
    return false
  }
  if (tasks.length === 0) return false
  for (const task of tasks) {
    let state: string | undefined
    try {
      const text = readFileSync(`/proc/${pid}/task/${task}/stat`, 'utf8')
      state = text.slice(text.lastIndexOf(')') + 2).split(' ')[0]
    } catch {
      // This thread is gone (reaped) meanwhile: it is not running.
      continue
    }
    if (state !== 'Z' && state !== 'X') return false
  }
  return true
}

/**
 * Resolves true once `who` is surely dead, false if it is not by `withinMs`. The socket closes
 * while the process is still exiting (the kernel closes its files before it becomes a zombie),
 * so "alive" is asked again a few times; "unknown" is final.
 */
export async function surelyDead(who: ProcessIdentity, withinMs = 1_000): Promise<boolean> {
  const start = performance.now()
  const deadline = start + withinMs
  for (;;) {
    const verdict = liveness(who)
    if (verdict === 'dead') return true
    // Often at first (a dying process is a zombie within milliseconds), then seldom: a few
    // syscalls each, for a live process whose socket was cut.
    const delay = performance.now() - start < 200 ? 2 : 50
    if (verdict === 'unknown' || performance.now() + delay > deadline) return false
    await new Promise((resolve) => setTimeout(resolve, delay).unref())
  }
}
