// A TypeScript entry point of this repository, bundled once per test process by esbuild and run
// under plain Node instead of under tsx: a process under tsx spends about half a second of CPU
// loading the loader and its sources (over a second on a loaded machine), the bundle starts in
// about 0.15 s. The same sources through the same transform (tsx uses esbuild too); each module
// keeps its own source file's import.meta.url, so what the code finds beside itself
// (src/cli/supervisor.cjs, package.json) is found as under tsx. Packages stay external: the
// bundle lives under node_modules/.cache in this repository, so they resolve as for the sources.
import { mkdirSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { build, type Plugin } from 'esbuild'
import { ROOT } from './snippets.js'

const OUT_DIR = join(ROOT, 'node_modules', '.cache', 'conclave-tests')

/** Replaces `import.meta.url` in every source file with that file's own URL. */
const keepModuleUrls: Plugin = {
  name: 'keep-module-urls',
  setup(b) {
    b.onLoad({ filter: /\.[cm]?ts$/ }, (args) => {
      const source = readFileSync(args.path, 'utf8')
      const url = JSON.stringify(pathToFileURL(args.path).href)
      return { contents: source.replaceAll('import.meta.url', url), loader: 'ts' }
    })
  },
}

const built = new Map<string, Promise<string>>()
/** This process's bundles, removed when it exits. */
const files: string[] = []

/**
 * The path of a plain-Node bundle of `entry` (a .ts file of this repository), built on the
 * first call in this process and removed when it exits. Run it as `node <path> ...args`.
 */
export function bundled(entry: string): Promise<string> {
  let path = built.get(entry)
  if (!path) {
    path = bundle(entry, built.size)
    built.set(entry, path)
  }
  return path
}

async function bundle(entry: string, n: number): Promise<string> {
  mkdirSync(OUT_DIR, { recursive: true })
  const name = entry.replace(/^.*[\\/]/, '').replace(/\.[cm]?ts$/, '')
  // The pid: test files side by side bundle at once.
  const outfile = join(OUT_DIR, `${name}-${process.pid}-${n}.mjs`)
  if (files.length === 0) {
    process.once('exit', () => {
      for (const file of files) rmSync(file, { force: true })
    })
  }
  files.push(outfile)
  await build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    logLevel: 'silent',
    plugins: [keepModuleUrls],
  })
  return outfile
}
