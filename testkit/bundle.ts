// Bundles a small program with esbuild into an empty folder and runs it under Node's permission
// model, allowed to read the bundle alone: proof that nothing conclave ships (Lua, SQL) is read
// from disk at run time. Shared by the Redis and PostgreSQL bundle tests.
import { execFile } from 'node:child_process'
import { readdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { build } from 'esbuild'

/** What the bundled program printed, and the files the output folder held beside it. */
export interface BundleRun {
  stdout: string
  files: string[]
}

/**
 * Writes `program` into `dir` (a real path: the permission model compares real paths), bundles
 * it (client libraries found in this repository's node_modules) into `dir/out`, deletes the
 * source, and runs the bundle with `env` added, reading nothing but itself.
 */
export async function bundleAndRun(
  dir: string,
  program: string,
  env: Record<string, string>,
  external: string[] = [],
): Promise<BundleRun> {
  const entry = join(dir, 'program.mjs')
  const outfile = join(dir, 'out', 'bundle.mjs')
  writeFileSync(entry, program)
  await build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    logLevel: 'silent',
    // The program lives outside the repository: its client library is found in the repository's.
    nodePaths: [fileURLToPath(new URL('../node_modules', import.meta.url))],
    external,
    // ioredis and pg are CommonJS and require Node's modules: an ESM bundle needs a require
    // (and conclave loads an optional peer through one).
    banner: {
      js: "import { createRequire as bannerRequire } from 'node:module'; const require = bannerRequire(import.meta.url);",
    },
  })
  rmSync(entry)
  const files = readdirSync(join(dir, 'out'))
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--experimental-permission', `--allow-fs-read=${outfile}`, outfile],
    { cwd: join(dir, 'out'), env: { ...process.env, ...env }, timeout: 30_000 },
  )
  return { stdout, files }
}
