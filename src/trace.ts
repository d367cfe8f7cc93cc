/**
 * Logs and traces without a dependency. Every step of an election is published on a named
 * `node:diagnostics_channel` channel (an OpenTelemetry, pino or metrics integration subscribes
 * to them; the election core builds no message while nobody listens:
 * it checks `tracing(step)` first) and written by `util.debuglog('conclave')`,
 * so `NODE_DEBUG=conclave` shows it on stderr. See docs/observability.md.
 *
 * The election core calls `publish` at each step; this file owns the channel names, the
 * message shapes and the debug lines, so integrations depend on one documented place.
 */
import { channel, type Channel } from 'node:diagnostics_channel'
import { debuglog } from 'node:util'

/** The channel of each step, by step. Their names are stable: integrations subscribe by name. */
export const CHANNELS = {
  /** A campaign starts asking the backend for a grant. */
  campaign: 'conclave:campaign',
  /** The backend answered a campaign's ask without a grant: the candidate waits. */
  waiting: 'conclave:waiting',
  /** A term began. */
  elected: 'conclave:elected',
  /** A renewal succeeded: the term's deadline moved. */
  renewed: 'conclave:renewed',
  /** A term was lost: the backend says the grant is gone (`lost`) or its deadline passed (`expired`). */
  lost: 'conclave:lost',
  /** A grant was handed back to the backend (resigned, closed, or after an expiry). */
  released: 'conclave:released',
  /** A term ended (once per term, last of its steps): why, and whether its grant was handed back. */
  ended: 'conclave:ended',
  /** An error the election reports (also its `error` event): a backend error it retries, a work error. */
  error: 'conclave:error',
} as const

/** One step's name (a key of CHANNELS). */
export type TraceStep = keyof typeof CHANNELS

/** What every message carries: which election. */
export interface TraceBase {
  resource: string
  candidate: string
}

/** The message published on each step's channel. */
export interface TraceMessages {
  campaign: TraceBase & { tickets: number; leaseMs: number }
  waiting: TraceBase & {
    /** Why: `held` (every ticket is taken), `queued`, `no-grant`, or the backend's code (e.g. `startup-grace`). */
    code: string
    /** A sentence saying why, for people. */
    reason: string
    /** When the candidate asks again unless woken first, in ms. */
    retryInMs: number
    /** How many hold the resource now. */
    holders: number
    /** Waiters in line before this candidate (absent: the backend keeps no line). */
    ahead?: number
  }
  elected: TraceBase & { token: number; leaseMs: number }
  renewed: TraceBase & { token: number; roundTripMs: number }
  lost: TraceBase & { token: number; reason: 'lost' | 'expired' }
  released: TraceBase & { token: number; reason: string }
  ended: TraceBase & {
    token: number
    /** `resigned`, `closed`, `lost` or `expired`. */
    reason: string
    /** True when the grant was handed back (false after a loss or a failed release). */
    released: boolean
  }
  error: TraceBase & { error: Error }
}

const channels = Object.fromEntries(
  Object.entries(CHANNELS).map(([step, name]) => [step, channel(name)]),
) as Record<TraceStep, Channel>

const debug = debuglog('conclave')

/** The debug line of a step (`NODE_DEBUG=conclave`). */
function line(step: TraceStep, m: TraceMessages[TraceStep]): string {
  const who = `"${m.resource}" (candidate ${m.candidate})`
  const msg = m as unknown as Record<string, unknown>
  switch (step) {
    case 'campaign':
      return `campaign ${who}: ${String(msg.tickets)} ticket(s), lease ${String(msg.leaseMs)} ms`
    case 'waiting':
      return `waiting ${who}: ${String(msg.reason)} (code ${String(msg.code)}, ${String(msg.holders)} holder(s), asking again in ${Math.round(Number(msg.retryInMs))} ms)`
    case 'elected':
      return `elected ${who}: token ${String(msg.token)}, lease ${String(msg.leaseMs)} ms`
    case 'renewed':
      return `renewed ${who}: token ${String(msg.token)}, round trip ${Math.round(Number(msg.roundTripMs))} ms`
    case 'lost':
      return `lost ${who}: token ${String(msg.token)} (${String(msg.reason)})`
    case 'released':
      return `released ${who}: token ${String(msg.token)} (${String(msg.reason)})`
    case 'ended':
      return `ended ${who}: token ${String(msg.token)} (${String(msg.reason)}, ${msg.released ? 'released' : 'not released'})`
    case 'error':
      return `error ${who}: ${(msg.error as Error).message}`
  }
}

/** True when someone listens to `step` (a subscriber, or NODE_DEBUG=conclave). */
export function tracing(step: TraceStep): boolean {
  return channels[step].hasSubscribers || debug.enabled
}

/**
 * Publishes one step on its channel and writes its debug line. Never throws: a subscriber's
 * error must not change the election (diagnostics_channel reports it as an uncaught error,
 * which is the subscriber's bug to see).
 */
export function publish<K extends TraceStep>(step: K, message: TraceMessages[K]): void {
  if (debug.enabled) debug('%s', line(step, message))
  const ch = channels[step]
  if (ch.hasSubscribers) ch.publish(message)
}
