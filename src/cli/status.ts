/**
 * `conclave status` and `conclave watch`: who holds a resource, once or on every change, as
 * lines for people or (`--json`) one JSON object per line for scripts. `watch` says when the
 * backend becomes unreachable and when it is back, with timestamps, and keeps watching.
 */
import type { Backend, Holder, Waiter } from '../backend.js'
import { Election } from '../election.js'
import { formatDuration } from '../validate.js'
import type { Palette } from './color.js'
import { describeError, redact } from './report.js'

/** Where the lines go, and how. */
export interface Output {
  json: boolean
  out: (line: string) => void
  color: Palette
}

/** How often `watch` asks an unreachable backend whether it is back. */
const PROBE_MS = 1_000

/** A holder as `--json` prints it. */
function holderJson(h: Holder) {
  return {
    candidate: h.candidate,
    token: h.token,
    remainingMs: h.remainingMs,
    metadata: h.metadata,
  }
}

/** A waiter as `--json` prints it (what the backend knows: null for what it does not). */
function waiterJson(w: Waiter) {
  return {
    candidate: w.candidate,
    remainingMs: w.remainingMs ?? null,
    metadata: w.metadata ?? null,
  }
}

/**
 * `conclave status`: the holders of each resource now, and the candidates queued for it when
 * the backend keeps a queue it can list (the optional Backend.waiters); otherwise the waiters
 * are known only to themselves, and status says so rather than inventing a list.
 */
export async function printStatus(backend: Backend, names: string[], o: Output): Promise<void> {
  const resources: { resource: string; holders: Holder[]; waiters: Waiter[] | null }[] = []
  for (const name of names) {
    const holders = await backend.holders(name)
    const waiters = backend.waiters ? await backend.waiters(name) : null
    resources.push({ resource: name, holders, waiters })
  }
  if (o.json) {
    o.out(
      redact(
        JSON.stringify({
          time: new Date().toISOString(),
          backend: backend.name,
          resources: resources.map((r) => ({
            resource: r.resource,
            holders: r.holders.map(holderJson),
            waiters: r.waiters && r.waiters.map(waiterJson),
          })),
        }),
      ),
    )
    return
  }
  const { bold, dim, green, yellow } = o.color
  for (const { resource, holders, waiters } of resources) {
    o.out(
      `${bold(resource)}: ${holders.length === 0 ? dim('no holder') : `${holders.length} holder(s)`}`,
    )
    for (const h of holders) {
      o.out(
        redact(
          `  ${green(h.candidate)}  token ${h.token}  ${(h.remainingMs / 1000).toFixed(1)}s left${h.metadata === null ? '' : `  ${dim(JSON.stringify(h.metadata))}`}`,
        ),
      )
    }
    if (waiters === null) {
      o.out(dim('  waiters: not reported by this backend'))
      continue
    }
    o.out(`  ${waiters.length === 0 ? dim('no waiter') : `${waiters.length} waiter(s)`}`)
    for (const w of waiters) {
      const left =
        w.remainingMs === undefined ? '' : `  queued ${(w.remainingMs / 1000).toFixed(1)}s more`
      const metadata =
        w.metadata === undefined || w.metadata === null
          ? ''
          : `  ${dim(JSON.stringify(w.metadata))}`
      o.out(redact(`  ${yellow(w.candidate)}  waiting${left}${metadata}`))
    }
  }
}

/**
 * `conclave watch`: the holders now and on every change, until `signal` aborts. A backend
 * error is never the end: the first one prints "unreachable (noticed at ...)" (when the error
 * came, not when the backend went away), a probe every second asks again, and the first answer
 * prints "reconnected" with the holders then. A holders line is printed only when it differs
 * from the last one printed (the probe's and the observer's answers after a reconnect agree).
 */
export async function watchHolders(
  backend: Backend,
  name: string,
  o: Output,
  signal: AbortSignal,
): Promise<void> {
  const { bold, dim, green, red, yellow } = o.color
  const stamp = () => new Date().toISOString()
  const holdersLine = (holders: Holder[]) => {
    if (o.json)
      return JSON.stringify({
        time: stamp(),
        event: 'holders',
        resource: name,
        holders: holders.map(holderJson),
      })
    const list = holders.map(
      (h) =>
        `${green(h.candidate)}#${h.token}${h.metadata === null ? '' : ` ${dim(JSON.stringify(h.metadata))}`}`,
    )
    return `${dim(stamp())}  ${bold(name)}: ${list.length ? list.join(', ') : dim('no holder')}`
  }
  // Outages are measured on the monotonic clock; only printed timestamps come from Date.
  let downSince: number | undefined
  let lastKey: string | undefined
  const printHolders = (holders: Holder[]) => {
    const key = JSON.stringify(holders.map((h) => [h.candidate, h.token, h.metadata]))
    if (key === lastKey) return
    lastKey = key
    o.out(redact(holdersLine(holders)))
  }
  let probing = false
  const probe = async () => {
    if (probing) return
    probing = true
    try {
      while (downSince !== undefined && !signal.aborted) {
        await new Promise((resolve) => setTimeout(resolve, PROBE_MS))
        if (signal.aborted) return
        let holders: Holder[]
        try {
          holders = await backend.holders(name)
        } catch {
          continue
        }
        const downMs = Math.round(performance.now() - downSince)
        downSince = undefined
        o.out(
          redact(
            o.json
              ? JSON.stringify({ time: stamp(), event: 'reconnected', resource: name, downMs })
              : `${dim(stamp())}  ${bold(name)}: ${green('reconnected')} after ${formatDuration(downMs)}`,
          ),
        )
        lastKey = undefined // after an outage, the holders are said again
        printHolders(holders)
      }
    } finally {
      probing = false
    }
  }
  // An Election used only to observe: it never campaigns.
  const election = new Election(backend, name)
  election.on('error', (error) => {
    if (downSince !== undefined) return
    downSince = performance.now()
    const since = stamp()
    o.out(
      redact(
        o.json
          ? JSON.stringify({
              time: since,
              event: 'unreachable',
              resource: name,
              since,
              error: describeError(error),
            })
          : `${dim(since)}  ${bold(name)}: ${red('unreachable')} (noticed at ${since}, ${yellow('retrying')}): ${describeError(error)}`,
      ),
    )
    void probe()
  })
  try {
    for await (const holders of election.observe({ signal })) {
      if (downSince !== undefined) continue // the probe says it first, with these holders
      printHolders(holders)
    }
  } finally {
    await election.close()
  }
}
