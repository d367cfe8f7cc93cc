/**
 * The contract between the agent (agent.ts) and its role, chosen once at construction: the
 * worker link (worker-link.ts) in a cluster worker, the primary router (primary-router.ts) in
 * the primary. Types only, so neither half imports the facade and no import circle appears.
 */
import type { Election } from '../election.js'
import type { Handlers } from './handlers.js'
import type { AgentSettings } from './options.js'
import type { Outcome, Peer, WireEntry } from './protocol.js'
import type { Serialization } from './serialize.js'

/** What a role gets from the agent: the parts both halves share. */
export interface AgentCore {
  readonly self: Peer
  readonly settings: AgentSettings
  readonly handlers: Handlers
  /** Where the designated process is elected (the router watches its holders). */
  readonly election: Election
  /** Aborted when the agent closes: roles stop watching and stop telling peers to cancel. */
  readonly stop: AbortSignal
  /** Starts campaigning for the designated role (the primary decides who does). */
  campaign(): void
  /** Tells `onError` (or the `error` event) about a failure no caller can receive. */
  report(error: unknown): void
}

/** What the agent asks of its role: the remote half of every call. */
export interface AgentRole {
  /** The IPC serialization values are checked against. */
  readonly serialization: Serialization
  /** True once calls may be checked and sent (a worker: the primary's agent answered). */
  readonly isReady: boolean
  /** Resolves once ready; never rejects. */
  ready(): Promise<void>
  /** Waits for readiness within `timeoutMs`, or rejects (timeout, abort). */
  awaitReady(timeoutMs: number, signal?: AbortSignal): Promise<void>
  /** Has the designated process (elsewhere) run `name`; a handler's error is in the outcome. */
  call(name: string, args: unknown[], timeoutMs: number, signal?: AbortSignal): Promise<Outcome>
  /** Has every worker run `name`; one entry per worker, in worker-id order. */
  gather(
    name: string,
    args: unknown[],
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<WireEntry[]>
  /** Has every worker run `name`, without answers; throws when it cannot be sent at all. */
  broadcast(name: string, args: unknown[]): void
  /** Detaches every listener and fails what is still waiting with `error`. */
  close(error: Error): void
}
