/**
 * Errors of the process agent. Each has a stable `code` and a `retryable` flag: `true` when the
 * failure is about where or when the call ran (the designated process died, nobody answered in
 * time), so calling again may succeed; `false` when calling again with the same input fails the
 * same way. They survive the trip between processes as their own classes.
 */
import { ConclaveError } from '../errors.js'

export class AgentError extends ConclaveError {
  readonly retryable: boolean
  constructor(code: string, message: string, retryable: boolean, options?: { cause?: unknown }) {
    super(code, message, options)
    this.retryable = retryable
  }
}

/** The designated process exited, disconnected or lost its term while running the call. */
export class DesignatedLostError extends AgentError {
  constructor(message: string) {
    super('ERR_CONCLAVE_AGENT_DESIGNATED_LOST', message, true)
  }
}

/** A worker asked in a `gather` exited or disconnected before it answered. */
export class WorkerLostError extends AgentError {
  constructor(message: string) {
    super('ERR_CONCLAVE_AGENT_WORKER_LOST', message, true)
  }
}

/** No answer within the call's `timeoutMs`. */
export class AgentTimeoutError extends AgentError {
  constructor(message: string) {
    super('ERR_CONCLAVE_AGENT_TIMEOUT', message, true)
  }
}

/** The process that received the call has no handler under that name. */
export class NoHandlerError extends AgentError {
  constructor(message: string) {
    super('ERR_CONCLAVE_AGENT_NO_HANDLER', message, false)
  }
}

/** An argument or result cannot be carried over this cluster's IPC serialization. */
export class NotSerializableError extends AgentError {
  /** Where in the value, e.g. `args[0].tags` or `result.when`. */
  readonly path: string
  readonly serialization: 'json' | 'advanced'
  constructor(path: string, serialization: 'json' | 'advanced', rule: string) {
    super(
      'ERR_CONCLAVE_AGENT_NOT_SERIALIZABLE',
      `Cannot carry ${path} over IPC with serialization "${serialization}": ${rule}`,
      false,
    )
    this.path = path
    this.serialization = serialization
  }
}

/** The agent was closed; nothing more can be called through it. */
export class AgentClosedError extends AgentError {
  constructor(message = 'The process agent is closed.') {
    super('ERR_CONCLAVE_AGENT_CLOSED', message, false)
  }
}

/**
 * An error thrown by the handler in another process, rebuilt here: `name`, `message`, `code`
 * and `stack` are the remote ones. `instanceof RemoteError` tells it from local failures.
 */
export class RemoteError extends Error {
  code?: string | number
  readonly retryable = false
  /** The process whose handler threw. */
  readonly remote: { workerId: number; pid: number }
  constructor(
    wire: { name: string; message: string; code?: string | number; stack?: string },
    remote: { workerId: number; pid: number },
  ) {
    super(wire.message)
    this.name = wire.name
    if (wire.code !== undefined) this.code = wire.code
    this.remote = remote
    const where = `    at <conclave agent: worker ${remote.workerId}, pid ${remote.pid}>`
    this.stack = wire.stack ? `${wire.stack}\n${where}` : `${wire.name}: ${wire.message}\n${where}`
  }
}
