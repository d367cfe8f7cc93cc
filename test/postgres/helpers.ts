// Shared bits of the PostgreSQL backend tests: forked TypeScript processes and their messages,
// and a child process that cannot resolve the optional peers.
import { type ChildProcess, execFile, fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const execFileAsync = promisify(execFile)

export interface Message {
  type: string
  [key: string]: unknown
}

/** Forks a TypeScript file: a path relative to this file, or an absolute one. */
export function forkTs(
  file: string,
  env: Record<string, string>,
  args: string[] = [],
): ChildProcess {
  const child = fork(fileURLToPath(new URL(file, import.meta.url)), args, {
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

/**
 * Runs the ES module `code` in a child node (with tsx) next to a copy of this repository's src/
 * in a temporary folder with no node_modules, so no optional peer (pg, etcd3, ioredis) can be
 * resolved from it; `code` imports `./src/...`. Resolves with the JSON the child printed last.
 */
export async function runWithoutPeers(code: string): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), 'conclave-no-peers-'))
  try {
    cpSync(fileURLToPath(new URL('../../src/', import.meta.url)), join(dir, 'src'), {
      recursive: true,
    })
    writeFileSync(join(dir, 'package.json'), '{ "type": "module" }\n')
    writeFileSync(join(dir, 'main.ts'), code)
    const { stdout } = await execFileAsync(
      process.execPath,
      ['--import', 'tsx', join(dir, 'main.ts')],
      {
        // tsx itself is found from the repository (--import resolves from the working folder);
        // everything main.ts imports resolves from the temporary folder.
        cwd: fileURLToPath(new URL('../../', import.meta.url)),
        env: { ...process.env, NODE_PATH: '' },
        timeout: 30_000,
      },
    )
    return JSON.parse(stdout.trim().split('\n').at(-1) ?? 'null') as Record<string, unknown>
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
