/**
 * The worker half of the agent: a cluster worker's link to the primary's router. It greets the
 * primary until the primary's agent welcomes it (learning the serialization and who
 * campaigns), sends calls and gathers and waits for their answers, and serves the runs and
 * invokes the primary hands it, replying with their outcomes.
 */
import { AgentDisconnectedError, AgentTimeoutError, ProtocolError } from '../errors.js'
import { envelope, isId, isOurs } from '../ipc/envelope.js'
import { raceAbort } from './handlers.js'
import {
  type FromPrimary,
  type FromWorker,
  idPrefix,
  isName,
  type Outcome,
  type WireEntry,
} from './protocol.js'
import type { AgentCore, AgentRole } from './role.js'
import type { Serialization } from './serialize.js'
import { clusterChannel, type RouterChannel } from './transport.js'

/** How often a worker greets a primary whose agent has not answered yet. */
const HELLO_EVERY_MS = 1_000

/** A call/gather this worker started and waits for. */
interface Pending {
  settle(message: FromPrimary & { type: 'result' | 'gathered' }): void
  fail(error: Error): void
}

/** The agent's role in a cluster worker (see the module comment). */
export class WorkerLink implements AgentRole {
  readonly #core: AgentCore
  readonly #channel: RouterChannel
  readonly #pending = new Map<string, Pending>()
  readonly #prefix = idPrefix()
  readonly #welcome: Promise<void>
  #seq = 0
  #off: (() => void)[] = []
  #serialization: Serialization = 'json'
  #welcomed = false
  #onWelcome: (() => void) | undefined

  /** Starts listening and greeting at once; the agent checks the IPC channel exists first. */
  constructor(core: AgentCore, channel: RouterChannel = clusterChannel()) {
    this.#core = core
    this.#channel = channel
    const onMessage = (message: unknown) => {
      if (!isOurs(message, core.settings.namespace)) return
      try {
        this.#onPrimaryMessage(message as FromPrimary)
      } catch (error) {
        core.report(error)
      }
    }
    const onDisconnect = () => {
      const error = new AgentDisconnectedError('The IPC channel to the primary closed.')
      for (const pending of [...this.#pending.values()]) pending.fail(error)
    }
    const hello = () => {
      // No channel yet (local: still reaching the hub): greeted when it connects.
      if (!channel.connected) return
      try {
        this.#send({ type: 'hello', candidate: core.election.id })
      } catch (error) {
        core.report(error)
      }
    }
    this.#off.push(
      channel.onMessage(onMessage),
      channel.onDisconnect(onDisconnect),
      // A new router (local: a new hub) knows nothing of this worker: greet it.
      channel.onConnect(hello),
    )
    this.#welcome = new Promise<void>((resolve) => {
      // The primary's agent may start after this worker: keep asking until it answers.
      const timer = setInterval(hello, HELLO_EVERY_MS)
      timer.unref()
      this.#off.push(() => clearInterval(timer))
      this.#onWelcome = () => {
        clearInterval(timer)
        resolve()
      }
      hello()
    })
  }

  /** `json` until the welcome says what the primary forks with. */
  get serialization(): Serialization {
    return this.#serialization
  }

  /** True once the primary's agent welcomed this worker. */
  get isReady(): boolean {
    return this.#welcomed
  }

  /** Resolves with the welcome. */
  ready(): Promise<void> {
    return this.#welcome
  }

  /** Waits for the welcome, with a hint when the primary's agent never answers. */
  awaitReady(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    return raceAbort(
      this.#welcome.then(() => ({ ok: true, value: undefined, by: this.#core.self })),
      signal,
      timeoutMs,
      () => {},
      'the welcome',
      'The primary did not answer the agent. Is the agent started in the primary (startAgent()) with the same namespace?',
    ).then(() => undefined)
  }

  /** Sends the call to the primary, which routes it to the designated process. */
  call(name: string, args: unknown[], timeoutMs: number, signal?: AbortSignal): Promise<Outcome> {
    return this.#request<FromPrimary & { type: 'result' }>('call', name, args, timeoutMs, signal)
  }

  /** Sends the gather to the primary, which asks every worker (this one too). */
  async gather(
    name: string,
    args: unknown[],
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<WireEntry[]> {
    // The primary answers at timeoutMs with timeout entries; the margin covers the trip back.
    const reply = await this.#request<FromPrimary & { type: 'gathered' }>(
      'gather',
      name,
      args,
      timeoutMs,
      signal,
      1_000,
    )
    return reply.entries
  }

  /** Hands the broadcast to the primary; throws when the channel is closed. */
  broadcast(name: string, args: unknown[]): void {
    this.#send({ type: 'broadcast', name, args })
  }

  /** Stops listening and greeting; the calls still waiting fail with `error`. */
  close(error: Error): void {
    for (const off of this.#off) off()
    this.#off = []
    for (const pending of [...this.#pending.values()]) pending.fail(error)
  }

  #onPrimaryMessage(m: FromPrimary): void {
    const core = this.#core
    switch (m.type) {
      case 'welcome':
        // The router's number for this worker (local: each hub numbers its connections).
        if (Number.isSafeInteger(m.workerId) && (m.workerId as number) > 0) {
          core.self.workerId = m.workerId as number
        }
        if (this.#welcomed) return
        this.#welcomed = true
        this.#serialization = m.serialization === 'advanced' ? 'advanced' : 'json'
        if (m.designated !== 'primary' && !core.stop.aborted) core.campaign()
        this.#onWelcome?.()
        return
      case 'run':
      case 'invoke': {
        if (
          (m.id !== null && !isId(m.id)) ||
          !isName(m.name) ||
          !Array.isArray(m.args) ||
          !Number.isInteger(m.timeoutMs) ||
          m.timeoutMs < 1 ||
          typeof m.from !== 'object' ||
          m.from === null
        ) {
          throw new ProtocolError(`Malformed ${m.type} message from the primary.`)
        }
        const id = m.id
        core.handlers.serve(
          m.type === 'run' ? 'designated' : 'worker',
          id,
          m.name,
          m.args,
          m.timeoutMs,
          m.from,
          (outcome) => {
            if (id === null) return
            this.#send(
              outcome.ok
                ? { type: 'reply', id, ok: true, value: outcome.value }
                : { type: 'reply', id, ok: false, error: outcome.error },
            )
          },
        )
        return
      }
      case 'cancel':
        core.handlers.cancel(m.id)
        return
      case 'result':
        if (typeof m.ok !== 'boolean' || typeof m.by !== 'object' || m.by === null) {
          throw new ProtocolError('Malformed result message from the primary.')
        }
        this.#pending.get(m.id)?.settle(m)
        return
      case 'gathered':
        if (!Array.isArray(m.entries))
          throw new ProtocolError('Malformed gathered message from the primary.')
        this.#pending.get(m.id)?.settle(m)
        return
    }
  }

  #request<M extends FromPrimary & { type: 'result' | 'gathered' }>(
    type: 'call' | 'gather',
    name: string,
    args: unknown[],
    timeoutMs: number,
    signal: AbortSignal | undefined,
    graceMs = 0,
  ): Promise<M> {
    const id = `${this.#prefix}-${++this.#seq}`
    return new Promise<M>((resolve, reject) => {
      const cleanup = () => {
        clearTimeout(timer)
        this.#pending.delete(id)
        signal?.removeEventListener('abort', onAbort)
      }
      const giveUp = (error: Error) => {
        cleanup()
        try {
          if (!this.#core.stop.aborted) this.#send({ type: 'cancel', id })
        } catch {
          // No channel, no remote work to stop.
        }
        reject(error)
      }
      const onAbort = () => giveUp(signal!.reason as Error)
      const timer = setTimeout(
        () =>
          giveUp(
            new AgentTimeoutError(
              type === 'call'
                ? `No answer to the call of "${name}" within ${timeoutMs} ms.`
                : `The primary did not answer the gather of "${name}" within ${timeoutMs + graceMs} ms.`,
            ),
          ),
        timeoutMs + graceMs,
      )
      timer.unref()
      signal?.addEventListener('abort', onAbort, { once: true })
      this.#pending.set(id, {
        settle: (message) => {
          cleanup()
          resolve(message as M)
        },
        fail: (error) => {
          cleanup()
          reject(error)
        },
      })
      try {
        this.#send({ type, id, name, args, timeoutMs })
      } catch (error) {
        cleanup()
        reject(error instanceof Error ? error : new Error(String(error)))
      }
    })
  }

  #send(body: FromWorker | { type: 'cancel'; id: string }): void {
    this.#channel.send(envelope(this.#core.settings.namespace, body), (error) =>
      this.#core.report(error),
    )
  }
}
