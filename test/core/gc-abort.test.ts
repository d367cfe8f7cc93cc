import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { expect, it } from 'vitest'

const fixture = fileURLToPath(new URL('./fixtures/gc-abort.ts', import.meta.url))

function run(): Promise<{ code: number | null; out: string }> {
  const child = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', fixture], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, out })))
}

it('rejects campaign({ signal: AbortSignal.timeout(ms) }) on time while garbage collections run', async () => {
  // Three separate processes: the collection that loses the combined signal is a matter of timing.
  for (let i = 0; i < 3; i++) {
    const { code, out } = await run()
    expect(out).toMatch(/rejected with TimeoutError/)
    expect(code).toBe(0)
  }
}, 60_000)
