// `conclave run --backend local:NAME` from separate shells (processes): one CMD at a time, the
// first runner hosting the hub. SIGKILL the holder (which is also the hub): the other runner
// takes the hub over and starts its CMD only after the old one is dead, with a larger token.
import { type ChildProcess, spawn } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { processAlive } from '../../testkit/index.js'
import { localDir } from '../../testkit/local.js'
import { sleep, until } from '../helpers/wait.js'
import { bundled } from '../../testkit/bundled.js'

// The CLI bundled once for this file (testkit/bundled.ts): it starts in a fraction of tsx's time.
const main = await bundled(fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url)))
const childScript = fileURLToPath(new URL('../cli/run-child.mjs', import.meta.url))
const runs: ChildProcess[] = []
const socketDir = localDir()
const recordDir = localDir()

afterEach(() => {
  for (const run of runs.splice(0)) if (run.exitCode === null) run.kill('SIGKILL')
})
afterAll(async () => {
  await socketDir.remove()
  await recordDir.remove()
})

function conclaveRun(id: string): ChildProcess {
  const url = `local:cli?dir=${encodeURIComponent(socketDir.dir)}`
  const proc = spawn(
    process.execPath,
    [
      main,
      'run',
      '--backend',
      url,
      '--name',
      'job',
      '--lease',
      '2s',
      '--id',
      id,
      '--',
      process.execPath,
      childScript,
      recordDir.dir,
      'term-exit:0',
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  )
  runs.push(proc)
  return proc
}

interface ChildRecord {
  pid: number
  token: string
  leaderId: string
}

function records(): ChildRecord[] {
  return readdirSync(recordDir.dir)
    .filter((f) => f.endsWith('.json'))
    .map((f) => JSON.parse(readFileSync(join(recordDir.dir, f), 'utf8')) as ChildRecord)
    .sort((a, b) => Number(a.token) - Number(b.token))
}

describe('conclave run --backend local:NAME', () => {
  it('runs one command at a time across separate runners; a SIGKILLed holder (the hub) hands over to the other', async () => {
    const a = conclaveRun('a')
    await until(() => records().length === 1, 30_000, 'a first command')
    const b = conclaveRun('b')
    let mostAlive = 0
    const watch = setInterval(() => {
      mostAlive = Math.max(mostAlive, records().filter((r) => processAlive(r.pid)).length)
    }, 10)
    try {
      await sleep(2_000)
      expect(records()).toHaveLength(1) // b waits
      const first = records()[0]!
      expect(first.leaderId).toBe('a')
      a.kill('SIGKILL')
      await until(() => records().length === 2, 30_000, 'b’s command')
      const second = records()[1]!
      expect(second.leaderId).toBe('b')
      expect(Number(second.token)).toBeGreaterThan(Number(first.token))
      expect(mostAlive).toBe(1)
      b.kill('SIGTERM')
    } finally {
      clearInterval(watch)
    }
  }, 60_000)
})
