// The package as a new user gets it: `npm pack` (prepack builds), installed from the tarball
// into a fresh CommonJS project beside the real ioredis, pg, etcd3 and prom-client. Checked:
// what the tarball holds; attw and publint find nothing; the types resolve for TypeScript
// under `module: commonjs` (node10, NestJS's default), node16 from CommonJS (TS1479 before),
// nodenext from ESM and bundler, and the compiled programs run; require() and import give one
// module; the README's quick start runs, and the Redis and PostgreSQL quick starts of
// docs/redis.md and docs/postgres.md run against real servers, from the installed package and
// from esbuild bundles.
import { execFile } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { transform } from 'esbuild'
import { publint } from 'publint'
import { formatMessage } from 'publint/utils'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { bundleAndRun } from '../../testkit/bundle.js'
import {
  startPostgres,
  startRedis,
  type PostgresServer,
  type RedisServer,
} from '../../testkit/index.js'
import { installProject, packPackage, repoVersion, type Packed } from '../../testkit/pack.js'
import { ROOT, snippetsOf } from '../../testkit/snippets.js'

const run = promisify(execFile)
const SUBPATHS = [
  '',
  '/memory',
  '/cluster',
  '/redis',
  '/etcd',
  '/postgres',
  '/local',
  '/agent',
  '/fence',
  '/nestjs',
]

let dir: string
let app: string
let packed: Packed
let redis: RedisServer
let postgres: PostgresServer
/** The servers of the quick starts' bundle runs: see `servers` below. */
let redisForBundle: RedisServer
let postgresForBundle: PostgresServer

beforeAll(async () => {
  // realpath: the permission model of the bundle runs compares real paths.
  dir = realpathSync(mkdtempSync(join(tmpdir(), 'conclave-package-')))
  app = join(dir, 'app')
  // The servers first: a fresh Redis grants nothing in its first lease + 1 s of uptime (the
  // startup grace), and the quick start's lease is 15 s; packing takes part of that wait.
  ;[redis, redisForBundle, postgres, postgresForBundle, packed] = await Promise.all([
    startRedis(),
    startRedis(),
    startPostgres(),
    startPostgres(),
    packPackage(dir),
  ])
  // conclave/nestjs needs its optional peers to load.
  const deps = [
    'ioredis',
    'pg',
    'etcd3',
    'prom-client',
    '@types/node',
    '@types/pg',
    '@nestjs/common',
    '@nestjs/core',
    'reflect-metadata',
    'rxjs',
  ]
  await installProject(
    app,
    packed.tarball,
    deps.map((name) => `${name}@${repoVersion(name)}`),
  )
}, 300_000)
afterAll(async () => {
  await redis?.stop()
  await redisForBundle?.stop()
  await postgres?.stop()
  await postgresForBundle?.stop()
  if (dir) rmSync(dir, { recursive: true, force: true })
})

const node = (args: string[], env: Record<string, string> = {}, timeout = 110_000) =>
  run(process.execPath, args, { cwd: app, env: { ...process.env, ...env }, timeout })

describe('the tarball', () => {
  it('holds dist/, README, LICENSE, CHANGELOG and the manifest: no source maps, no src/', () => {
    const top = new Set(packed.files.map((f) => f.split('/')[0]))
    expect([...top].sort()).toEqual([
      'CHANGELOG.md',
      'LICENSE',
      'README.md',
      'dist',
      'package.json',
    ])
    expect(packed.files.filter((f) => f.endsWith('.map'))).toEqual([])
    // Each entry point, in both module systems, with its types.
    for (const sub of ['index', 'backends/redis/index', 'backends/postgres/index', 'agent/index']) {
      for (const ext of ['.js', '.cjs', '.d.ts', '.d.cts']) {
        expect(packed.files).toContain(`dist/${sub}${ext}`)
      }
    }
  })

  it('@arethetypeswrong/cli finds no problem under node10, node16 (CJS and ESM) and bundler', async () => {
    const attw = join(ROOT, 'node_modules', '.bin', 'attw')
    const { stdout } = await run(attw, [packed.tarball, '--format', 'json'], {
      maxBuffer: 64 * 1024 * 1024,
    }).catch((error: { stdout: string }) => error)
    const report = JSON.parse(stdout) as {
      // Problems grouped by entry point: none at all.
      problems: Record<string, unknown>
      analysis: { entrypoints: Record<string, unknown> }
    }
    expect(report.problems).toEqual({})
    expect(Object.keys(report.analysis.entrypoints).sort()).toEqual(
      [...SUBPATHS.map((s) => `.${s}`), './package.json'].sort(),
    )
  }, 120_000)

  it('publint (strict) finds nothing', async () => {
    const tarball = readFileSync(packed.tarball)
    const { messages, pkg } = await publint({
      pack: {
        tarball: tarball.buffer.slice(tarball.byteOffset, tarball.byteOffset + tarball.length),
      },
      level: 'suggestion',
      strict: true,
    })
    expect(messages.map((m) => `${m.type}: ${formatMessage(m, pkg) ?? m.code}`)).toEqual([])
  })
})

// One program importing every entry point, typed; compiled under each resolution below.
const CONSUMER = `
import { Election, memoryBackend, type Term, LeadershipLostError } from 'conclave'
import { MemoryBackend } from 'conclave/memory'
import { clusterBackend } from 'conclave/cluster'
import { redisBackend, type RedisBackendOptions } from 'conclave/redis'
import { etcdBackend } from 'conclave/etcd'
import { postgresBackend, migrate } from 'conclave/postgres'
import { runInPrimary, startAgent } from 'conclave/agent'
import { fencedWrite, StaleTokenError } from 'conclave/fence'

const options: RedisBackendOptions = { url: 'redis://127.0.0.1:1' }
const functions: unknown[] = [clusterBackend, redisBackend, etcdBackend, postgresBackend, migrate, runInPrimary, startAgent, fencedWrite]

async function main(): Promise<void> {
  const backend = memoryBackend()
  const election = new Election(backend, 'consumer/job', { leaseMs: 1_000 })
  const term: Term = await election.campaign()
  const token: number = term.token
  await election.close()
  console.log(JSON.stringify({
    token,
    memory: backend instanceof MemoryBackend,
    errors: new StaleTokenError('k', 1, 2) instanceof Error && typeof LeadershipLostError === 'function',
    functions: functions.every((f) => typeof f === 'function'),
    url: options.url,
  }))
}
void main()
`

describe('TypeScript users', () => {
  // [tsconfig name, compiler options, source file, output to run (none: noEmit)]
  const cases = [
    [
      'module commonjs (node10: NestJS)',
      { module: 'commonjs', moduleResolution: 'node10', esModuleInterop: true },
      'cjs.ts',
      'out-node10/cjs.js',
    ],
    [
      'node16 from CommonJS',
      { module: 'node16', moduleResolution: 'node16' },
      'cjs.ts',
      'out-node16/cjs.js',
    ],
    [
      'nodenext from ESM',
      { module: 'nodenext', moduleResolution: 'nodenext' },
      'esm.mts',
      'out-nodenext/esm.mjs',
    ],
    [
      'bundler',
      { module: 'esnext', moduleResolution: 'bundler', noEmit: true },
      'esm.mts',
      undefined,
    ],
  ] as const

  // The sources first, once: the cases below read them side by side.
  beforeAll(() => {
    for (const source of new Set(cases.map((c) => c[2]))) writeFileSync(join(app, source), CONSUMER)
  })

  // Side by side: each case is its own tsc process with its own tsconfig and output folder
  // (CPU-bound, so a small machine runs them about twice as fast together).
  it.concurrent.each(cases)(
    '%s: the types resolve and the program runs',
    async (name, options, source, output) => {
      const slug = output?.split('/')[0] ?? 'bundler'
      writeFileSync(
        join(app, `tsconfig.${slug}.json`),
        JSON.stringify({
          compilerOptions: {
            strict: true,
            target: 'es2022',
            lib: ['es2023', 'esnext.disposable'],
            types: ['node'],
            // The CommonJS flavours check the declarations too (the .d.cts graph is generated).
            skipLibCheck: !source.startsWith('cjs'),
            outDir: slug,
            ...options,
          },
          files: [source],
        }),
      )
      const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc')
      // A failed tsc shows its diagnostics; one killed (a timeout) shows its signal, not a pass.
      // Side by side on a small machine a tsc takes longer: a longer bound than one program's.
      const compiled = await node([tsc, '-p', `tsconfig.${slug}.json`], {}, 220_000).then(
        ({ stdout }) => ({ stdout, signal: null }),
        (error: { stdout: string; signal: string | null }) => ({
          stdout: error.stdout || `tsc failed (signal ${error.signal})`,
          signal: error.signal,
        }),
      )
      expect(compiled.stdout, name).toBe('')
      if (!output) return
      const { stdout } = await node([output])
      expect(JSON.parse(stdout)).toEqual({
        token: expect.any(Number) as number,
        memory: true,
        errors: true,
        functions: true,
        url: 'redis://127.0.0.1:1',
      })
    },
    240_000,
  )
})

describe('JavaScript users', () => {
  it('require() of every entry point works (require(esm)) and is the very module import gives', async () => {
    const program = `
      const subpaths = ${JSON.stringify(SUBPATHS)}
      Promise.all(subpaths.map(async (s) => {
        const required = require('conclave' + s)
        const imported = await import('conclave' + s)
        const names = Object.keys(imported)
        return [s, names.length > 0 && names.every((n) => required[n] === imported[n])]
      })).then((pairs) => console.log(JSON.stringify(Object.fromEntries(pairs))))
    `
    writeFileSync(join(app, 'require.cjs'), program)
    const { stdout, stderr } = await node(['require.cjs'])
    expect(JSON.parse(stdout)).toEqual(Object.fromEntries(SUBPATHS.map((s) => [s, true])))
    expect(stderr).toBe('')
  })
})

/** The block of `file` that starts an election, compiled to JavaScript after `prelude`. */
async function quickStart(file: string, prelude: string): Promise<string> {
  const block = snippetsOf(file).find((s) => s.code.includes('new Election('))
  if (!block) throw new Error(`${file}: no quick start`)
  const { code } = await transform(block.code, { loader: 'ts', format: 'esm', target: 'node20' })
  return `${prelude}\n${code}`
}

// The work the docs' quick starts call: report the term's token, then end the program.
const REPORT = `globalThis.runReports = async ({ fencingToken }) => {
  console.log(JSON.stringify({ fencingToken }))
  process.exit(0)
}`

describe('quick starts', () => {
  it("README's: elects, works, and a SIGTERM closes the election, so the program ends", async () => {
    // Its work signals the process itself: the quick start's own SIGTERM handler closes.
    const prelude = `globalThis.log = console
globalThis.nightlyReport = async ({ signal, fencingToken }) => {
  console.log(JSON.stringify({ fencingToken }))
  // A real job keeps the process busy (a signal listener alone does not).
  const busy = setInterval(() => {}, 1_000)
  process.kill(process.pid, 'SIGTERM')
  await new Promise((resolve) => signal.addEventListener('abort', resolve))
  clearInterval(busy)
  console.log(JSON.stringify({ aborted: signal.aborted }))
}`
    writeFileSync(join(app, 'readme.mjs'), await quickStart('README.md', prelude))
    const { stdout } = await node(['readme.mjs'])
    expect(
      stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as unknown),
    ).toEqual([{ fencingToken: expect.any(Number) as number }, { aborted: true }])
  })

  // [doc, env of the installed package's run, env of the bundle's run, bundle's externals].
  // A quick start's process ends inside its work (process.exit), still holding its 15 s grant:
  // the bundle's run on the same server waited that lease out (14 s), so the bundle runs get
  // servers of their own (started with the others: a fresh Redis's startup grace is over).
  const servers = [
    [
      'docs/redis.md',
      () => ({ REDIS_URL: redis.url }),
      () => ({ REDIS_URL: redisForBundle.url }),
      [],
    ],
    [
      'docs/postgres.md',
      () => ({ DATABASE_URL: postgres.connectionString }),
      () => ({ DATABASE_URL: postgresForBundle.connectionString }),
      ['pg-native'],
    ],
  ] as const

  it.each(servers)(
    '%s: runs from the installed package against a real server',
    async (file, env) => {
      const program = join(app, `${file.replace(/\W/g, '_')}.mjs`)
      writeFileSync(program, await quickStart(file, REPORT))
      const { stdout } = await node([program], env())
      expect(JSON.parse(stdout)).toEqual({ fencingToken: expect.any(Number) as number })
    },
    60_000,
  )

  it.each(servers)(
    '%s: runs from an esbuild bundle that reads no file at run time',
    async (file, _installedEnv, env, external) => {
      const bundleDir = join(app, `bundle-${file.replace(/\W/g, '_')}`)
      mkdirSync(bundleDir)
      const { stdout, files } = await bundleAndRun(
        bundleDir,
        await quickStart(file, REPORT),
        env(),
        [...external],
      )
      expect(files).toEqual(['bundle.mjs'])
      expect(JSON.parse(stdout)).toEqual({ fencingToken: expect.any(Number) as number })
    },
    60_000,
  )
})
