// The API reference (npm run docs: TypeDoc over the package's entry points, into docs/api/)
// builds, and every export is documented: typedoc.json asks for a doc comment on every
// exported class, function, interface, type and constant (validation.notDocumented), on every
// member TypeDoc finds undocumented under them, and for no broken {@link}; warnings are errors.
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { expect, it } from 'vitest'
import { ROOT } from '../../testkit/snippets.js'

it('TypeDoc documents every export of every entry point, with no warning', async () => {
  const typedoc = join(ROOT, 'node_modules', '.bin', 'typedoc')
  const result = await promisify(execFile)(typedoc, ['--emit', 'none'], {
    cwd: ROOT,
    maxBuffer: 64 * 1024 * 1024,
    env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' },
  }).then(
    ({ stdout, stderr }) => ({ failed: false, output: stdout + stderr }),
    (error: { stdout: string; stderr: string }) => ({
      failed: true,
      output: error.stdout + error.stderr,
    }),
  )
  // One line per undocumented export, if any.
  expect(result.output.split('\n').filter((line) => /warning|error/i.test(line))).toEqual([])
  expect(result.failed).toBe(false)
}, 300_000)
