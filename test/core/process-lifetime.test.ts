import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const fixture = fileURLToPath(new URL('./fixtures/lifetime.ts', import.meta.url))

function start(mode: string) {
  const child = spawn(process.execPath, ['--import', 'tsx', fixture, mode], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  return { child, exited, output: () => out }
}

describe('process lifetime', () => {
  it('lets a process that only holds a term exit: renewal timers are unref’d', async () => {
    const { exited, output } = start('holding')
    expect(await exited).toBe(0)
    expect(output()).toMatch(/holding token 1/)
  })

  it('keeps a process alive while a campaign is awaited', async () => {
    const { child, exited, output } = start('waiting')
    let code: number | null | 'running' = 'running'
    void exited.then((c) => (code = c))
    // The holder's lease is 60 s: without the campaign's keep-alive the process would exit
    // as soon as it printed "waiting".
    while (!output().includes('waiting')) await new Promise((r) => setTimeout(r, 20))
    await new Promise((r) => setTimeout(r, 1_500))
    expect(code).toBe('running')
    child.kill('SIGTERM')
    await exited
  })
})
