// ioredis is an optional peer dependency: where it is not installed, `redisBackend({ url })`
// fails at once with a MissingPeerError (final, never retried) instead of a backend error the
// election would retry forever. A child process runs a copy of src/ in a temporary folder with
// no node_modules above it (under tsx, loaded by absolute path), so ioredis really cannot load.
import { execFile } from 'node:child_process'
import { cpSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { promisify } from 'node:util'
import { expect, it } from 'vitest'

const PROBE = `
const report = {}
const caught = (error) => ({
  name: error?.name,
  code: error?.code,
  peer: error?.peer,
  message: error?.message,
  cause: error?.cause?.code,
})
try {
  await import('ioredis')
  report.ioredis = 'imported'
} catch (error) {
  report.ioredis = caught(error)
}
const { redisBackend, backendFromUrl } = await import('./src/backends/redis/index.ts')
const startedAt = performance.now()
try {
  const backend = redisBackend({ url: 'redis://127.0.0.1:1' })
  report.made = 'a backend'
  report.firstCall = await backend.holders('x').then(() => 'answered', caught)
  await backend.close()
} catch (error) {
  report.made = caught(error)
}
report.fromUrl = await backendFromUrl('redis://127.0.0.1:1').then(() => 'a backend', caught)
report.tookMs = performance.now() - startedAt
console.log(JSON.stringify(report))
`

it('fails at once with MissingPeerError when ioredis cannot be imported', async () => {
  // realpath: a tmpdir behind a symlink must not lead back to a node_modules.
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'conclave-no-ioredis-')))
  try {
    cpSync(fileURLToPath(new URL('../../src', import.meta.url)), join(dir, 'src'), {
      recursive: true,
    })
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ type: 'module' }))
    writeFileSync(join(dir, 'probe.ts'), PROBE)
    const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href
    const env: NodeJS.ProcessEnv = { ...process.env }
    delete env.NODE_PATH
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', tsx, 'probe.ts'], {
      cwd: dir,
      env,
      timeout: 60_000,
    })
    const report = JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, unknown>
    // The child really has no ioredis.
    expect(report.ioredis).toMatchObject({ code: 'ERR_MODULE_NOT_FOUND' })
    for (const what of ['made', 'fromUrl'] as const) {
      expect(report[what], JSON.stringify(report)).toMatchObject({
        name: 'MissingPeerError',
        code: 'ERR_CONCLAVE_MISSING_PEER',
        peer: 'ioredis',
        cause: 'MODULE_NOT_FOUND',
      })
      expect((report[what] as { message: string }).message).toMatch(/npm install ioredis/)
    }
    // At once: no connection attempts, no retries (a generous bound for a loaded machine).
    expect(report.tookMs).toBeLessThan(5_000)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}, 90_000)
