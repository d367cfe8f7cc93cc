// Packs conclave as `npm pack` would for a release and installs the tarball into a fresh
// project, as a new user would. The pack runs in a copy of the package's inputs (src/,
// scripts/, the manifests), so `prepack` really builds (into the copy's dist/) and the
// repository's own dist/, which other tests run, is never removed under them.
import { execFile } from 'node:child_process'
import { cpSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { ROOT } from './snippets.js'

const run = promisify(execFile)
/** What `prepack` needs to build, and what `files` ships. */
const INPUTS = [
  'package.json',
  'package-lock.json',
  'tsconfig.json',
  'tsconfig.build.json',
  'README.md',
  'LICENSE',
  'CHANGELOG.md',
  'src',
  'scripts',
]

/** The packed tarball: its path and the files npm put in it. */
export interface Packed {
  tarball: string
  files: string[]
}

/** Packs the package (prepack builds it) into `dir`; returns the tarball and its file list. */
export async function packPackage(dir: string): Promise<Packed> {
  const copy = join(dir, 'package')
  mkdirSync(copy, { recursive: true })
  for (const input of INPUTS) cpSync(join(ROOT, input), join(copy, input), { recursive: true })
  // The build's tools (tsc) and the types it compiles against.
  symlinkSync(join(ROOT, 'node_modules'), join(copy, 'node_modules'), 'dir')
  const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', dir], {
    cwd: copy,
    maxBuffer: 64 * 1024 * 1024,
  })
  // npm prints the lifecycle scripts' output before the JSON.
  const [report] = JSON.parse(stdout.slice(stdout.search(/^\[/m))) as {
    filename: string
    files: { path: string }[]
  }[]
  return { tarball: join(dir, report!.filename), files: report!.files.map((f) => f.path) }
}

/** The version of a dependency installed in this repository (the one the tests use). */
export function repoVersion(name: string): string {
  const manifest = JSON.parse(
    readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8'),
  ) as { version: string }
  return manifest.version
}

/**
 * A fresh CommonJS project in `dir` (no "type": a plain `npm init` project) with the tarball
 * and `dependencies` (name@version) installed by npm, from its cache when it can.
 */
export async function installProject(
  dir: string,
  tarball: string,
  dependencies: string[],
): Promise<void> {
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, 'package.json'), `${JSON.stringify({ name: 'app', private: true })}\n`)
  await run(
    'npm',
    [
      'install',
      '--prefer-offline',
      '--no-audit',
      '--no-fund',
      '--ignore-scripts',
      tarball,
      ...dependencies,
    ],
    { cwd: dir, maxBuffer: 64 * 1024 * 1024, timeout: 180_000 },
  )
}
