// Shared bits of the PostgreSQL backend tests: forked TypeScript processes and their messages.
import { type ChildProcess, fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'

export interface Message {
  type: string
  [key: string]: unknown
}

export function forkTs(file: string, env: Record<string, string>): ChildProcess {
  const child = fork(fileURLToPath(new URL(file, import.meta.url)), {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  child.on('error', () => {})
  return child
}

/** The next message of `type` from the child (rejects on exit or timeout). */
export function nextMessage(
  child: ChildProcess,
  type: string,
  timeoutMs = 20_000,
): Promise<Message> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup()
      reject(new Error(`no "${type}" message from child ${child.pid} in ${timeoutMs} ms`))
    }, timeoutMs)
    const onMessage = (message: Message) => {
      if (message?.type !== type) return
      cleanup()
      resolve(message)
    }
    const onExit = (code: number | null, signal: string | null) => {
      cleanup()
      reject(new Error(`child ${child.pid} exited (${code ?? signal}) before sending "${type}"`))
    }
    const cleanup = () => {
      clearTimeout(timer)
      child.off('message', onMessage)
      child.off('exit', onExit)
    }
    child.on('message', onMessage)
    child.on('exit', onExit)
  })
}

export function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => child.once('exit', () => resolve()))
}

export { sleep, until } from '../helpers/wait.js'

/** A schema name no other test file uses. */
export function uniqueSchema(label: string): string {
  return `t_${label}_${randomBytes(4).toString('hex')}`
}

/** Adds a query parameter to a connection string. */
export function withParam(connectionString: string, name: string, value: string): string {
  const url = new URL(connectionString)
  url.searchParams.set(name, value)
  return url.toString()
}
