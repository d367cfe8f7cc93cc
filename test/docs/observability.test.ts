// docs/observability.md's pino and OpenTelemetry examples, run as written (only `from
// 'conclave'` pointed at the source) with real pino and a real OpenTelemetry SDK.
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, expect, it } from 'vitest'

const root = fileURLToPath(new URL('../../', import.meta.url))
const driver = join(root, 'test/docs/fixtures/observability-driver.ts')
// Inside the repository, so the examples' imports (pino, @opentelemetry/api) resolve.
const dir = mkdtempSync(join(root, 'test/docs/fixtures/tmp-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

/** The TypeScript block under `## heading` of docs/observability.md. */
function example(heading: string): string {
  const doc = readFileSync(join(root, 'docs/observability.md'), 'utf8')
  const section = doc.split(/^## /m).find((s) => s.startsWith(`${heading}\n`))
  const code = /```ts\n([\s\S]*?)```/.exec(section ?? '')?.[1]
  if (!code) throw new Error(`no ts block under "## ${heading}"`)
  return code.replace(`from 'conclave'`, `from '${join(root, 'src/index.ts')}'`)
}

function runExample(
  name: string,
  code: string,
  mode = '',
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const file = join(dir, `${name}.ts`)
  writeFileSync(file, code)
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', driver, file, mode], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    child.on('exit', (exit) => resolve({ code: exit, stdout, stderr }))
  })
}

it('the pino example logs every step of a term as a pino line', async () => {
  const { code, stdout, stderr } = await runExample('pino', example('pino'))
  expect(code, stderr).toBe(0)
  const lines = stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { msg: string; name: string; resource: string; token?: number })
  expect(lines.map((l) => l.msg)).toEqual([
    'conclave campaign',
    'conclave elected',
    'conclave renewed',
    'conclave released',
    'conclave ended',
  ])
  expect(lines.every((l) => l.name === 'conclave' && l.resource === 'docs/observed')).toBe(true)
  expect(lines[1]!.token).toBe(lines[3]!.token)
})

it('the OpenTelemetry example makes one span per term, ended with the term', async () => {
  const { code, stdout, stderr } = await runExample('otel', example('OpenTelemetry'), 'otel')
  expect(code, stderr).toBe(0)
  const { spans } = JSON.parse(stdout.trim().split('\n').at(-1)!) as {
    spans: { name: string; attributes: Record<string, unknown> }[]
  }
  expect(spans).toHaveLength(1)
  expect(spans[0]!.name).toBe('conclave.term')
  expect(spans[0]!.attributes).toMatchObject({
    'conclave.resource': 'docs/observed',
    'conclave.candidate': 'cand-1',
    'conclave.end': 'resigned',
    'conclave.released': true,
  })
  expect(typeof spans[0]!.attributes['conclave.token']).toBe('number')
})
