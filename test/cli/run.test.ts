// `conclave run` with real processes: the CLI (bundled from src/), its supervisor, a real command
// (test/cli/run-child.mjs) and its grandchild. One runner's behaviour against the first
// networked backend's private server (memory: and cluster: are refused: separate runners could
// never agree on them); the cross-process behaviour (two `conclave run` competing) once per
// networked backend registered in src/cli/backends.ts, each against its private server.
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { startProxy, type FaultProxy } from '../../testkit/proxy.js'
import { processAlive } from '../../testkit/index.js'
import { firstFamily, registeredFamilies, startServer, type NetworkedServer } from './networked.js'
import { bundled } from '../../testkit/bundled.js'

// The CLI bundled once for this file (testkit/bundled.ts): it starts in a fraction of tsx's time.
const main = await bundled(fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url)))

/** The environment without color: output is compared as plain text, whatever the terminal. */
function plainEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1' }
  delete env.FORCE_COLOR
  return env
}
const childScript = fileURLToPath(new URL('./run-child.mjs', import.meta.url))

interface RunProcess {
  proc: ChildProcess
  output: () => string
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

const started: RunProcess[] = []
const dirs: string[] = []

function conclaveRun(args: string[]): RunProcess {
  return conclave(['run', ...args])
}

function conclave(args: string[]): RunProcess {
  const proc = spawn(process.execPath, [main, ...args], {
    env: plainEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  proc.stdout.on('data', (d: Buffer) => (output += d.toString()))
  proc.stderr.on('data', (d: Buffer) => (output += d.toString()))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('exit', (code, signal) => resolve({ code, signal })),
  )
  const run = { proc, output: () => output, exited }
  started.push(run)
  return run
}

/** `conclave run` of run-child.mjs, recording into `dir`. */
function runChild(flags: string[], dir: string, ...modes: string[]): RunProcess {
  return conclaveRun([...flags, '--', process.execPath, childScript, dir, ...modes])
}

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'conclave-run-'))
  dirs.push(dir)
  return dir
}

interface ChildRecord {
  pid: number
  grandchild?: number
  token: string
  leaderId: string
  resource: string
  at: number
}

function records(dir: string): ChildRecord[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as ChildRecord)
    .sort((a, b) => Number(a.token) - Number(b.token))
}

function events(dir: string, pid: number): string[] {
  try {
    return readFileSync(join(dir, `${pid}.events`), 'utf8')
      .split('\n')
      .filter(Boolean)
  } catch {
    return []
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

async function until<T>(
  check: () => T | undefined | false,
  timeoutMs: number,
  what: string,
): Promise<T> {
  const end = performance.now() + timeoutMs
  for (;;) {
    const value = check()
    if (value !== undefined && value !== false) return value
    if (performance.now() > end)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(20)
  }
}

async function exitOf(run: RunProcess, timeoutMs: number) {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`conclave run did not exit in ${timeoutMs} ms:\n${run.output()}`)),
      timeoutMs,
    )
  })
  try {
    return await Promise.race([run.exited, timeout])
  } finally {
    clearTimeout(timer)
  }
}

afterEach(async () => {
  for (const run of started.splice(0)) {
    if (run.proc.exitCode === null && run.proc.signalCode === null) {
      run.proc.kill('SIGKILL')
      await run.exited
    }
  }
})

afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
})

describe(`conclave run, one runner (on ${firstFamily()})`, () => {
  let server: NetworkedServer
  // Validation fails before any connection: this URL is never dialled.
  const unused = 'redis://127.0.0.1:1'

  beforeAll(async () => {
    server = await startServer(firstFamily())
  }, 120_000)
  afterAll(async () => {
    await server?.stop()
  })

  it('gives the command its token and leader id, and exits with its code', async () => {
    const dir = tempDir()
    const run = runChild(
      ['--backend', server.url, '--name', 'jobs/env', '--id', 'me-1'],
      dir,
      'exit:7',
    )
    expect((await exitOf(run, 20_000)).code).toBe(7)
    const [record] = records(dir)
    expect(record).toMatchObject({ leaderId: 'me-1', resource: 'jobs/env' })
    expect(record!.token).toMatch(/^[1-9]\d*$/)
  })

  it('never prints nor publishes a password from CMD’s arguments', async () => {
    const dir = tempDir()
    const secretUrl = 'postgres://app:hunter2@db.internal/app'
    const run = runChild(
      ['--backend', server.url, '--name', 'jobs/secret'],
      dir,
      'term-exit:0',
      secretUrl,
    )
    await until(() => records(dir).length === 1, 20_000, 'the command to start')
    const status = conclave(['status', '--backend', server.url, 'jobs/secret'])
    expect((await exitOf(status, 20_000)).code).toBe(0)
    expect(status.output()).toContain('postgres://app:***@db.internal/app')
    expect(status.output()).not.toContain('hunter2')
    run.proc.kill('SIGTERM')
    await exitOf(run, 20_000)
    expect(run.output()).toContain('postgres://app:***@db.internal/app')
    expect(run.output()).not.toContain('hunter2')
  })

  it('forwards SIGTERM to the command and exits with the code it chose', async () => {
    const dir = tempDir()
    const run = runChild(['--backend', server.url, '--name', 'jobs/term'], dir, 'term-exit:3')
    const [record] = await until(() => records(dir).length === 1 && records(dir), 20_000, 'start')
    run.proc.kill('SIGTERM')
    expect((await exitOf(run, 20_000)).code).toBe(3)
    expect(events(dir, record!.pid)).toEqual(['SIGTERM'])
    expect(run.output()).toContain('the command exited with code 3')
  })

  it('SIGKILLs a command that ignores the forwarded SIGTERM after the grace period', async () => {
    const dir = tempDir()
    const run = runChild(
      ['--backend', server.url, '--name', 'jobs/stubborn', '--grace', '300ms'],
      dir,
      'term-ignore',
    )
    const [record] = await until(() => records(dir).length === 1 && records(dir), 20_000, 'start')
    run.proc.kill('SIGTERM')
    expect((await exitOf(run, 20_000)).code).toBe(128 + 9)
    expect(events(dir, record!.pid)).toEqual(['SIGTERM'])
    expect(processAlive(record!.pid)).toBe(false)
  })

  it('takes its command and the command’s children down with it when SIGKILLed', async () => {
    const dir = tempDir()
    const run = runChild(['--backend', server.url, '--name', 'jobs/orphan'], dir, 'grandchild')
    const [record] = await until(() => records(dir).length === 1 && records(dir), 20_000, 'start')
    expect(processAlive(record!.pid)).toBe(true)
    expect(processAlive(record!.grandchild!)).toBe(true)
    run.proc.kill('SIGKILL')
    await run.exited
    await until(
      () => !processAlive(record!.pid) && !processAlive(record!.grandchild!),
      5_000,
      'the command and its grandchild to die with conclave run',
    )
  })

  it('stops the command by itself when conclave run is paused past the term’s deadline', async () => {
    const dir = tempDir()
    const run = runChild(
      ['--backend', server.url, '--name', 'jobs/paused', '--lease', '1s', '--grace', '300ms'],
      dir,
      'term-exit:5',
    )
    const [record] = await until(() => records(dir).length === 1 && records(dir), 20_000, 'start')
    run.proc.kill('SIGSTOP')
    try {
      // The lease is 1 s: nobody but the supervisor can stop the command while we are paused.
      await until(() => !processAlive(record!.pid), 10_000, 'the supervisor to stop the command')
      expect(events(dir, record!.pid)).toEqual(['SIGTERM'])
    } finally {
      run.proc.kill('SIGCONT')
    }
    // The term ended under CMD (CMD's own code was 5): conclave run says so with its code 6.
    expect((await exitOf(run, 20_000)).code).toBe(6)
    expect(run.output()).toContain('stopped by the supervisor')
    expect(run.output()).toMatch(/exited with code 5/)
  })

  it('campaigns again with --forever after the supervisor stopped the command (a paused term)', async () => {
    const dir = tempDir()
    const run = runChild(
      [
        '--backend',
        server.url,
        '--name',
        'jobs/paused-forever',
        '--lease',
        '1s',
        '--grace',
        '300ms',
        '--forever',
      ],
      dir,
      'term-exit:5',
    )
    const [record] = await until(() => records(dir).length === 1 && records(dir), 20_000, 'start')
    run.proc.kill('SIGSTOP')
    try {
      await until(() => !processAlive(record!.pid), 10_000, 'the supervisor to stop the command')
    } finally {
      run.proc.kill('SIGCONT')
    }
    const second = await until(() => records(dir)[1], 30_000, 'the command to start again')
    // The same token when a renewal right after the pause kept the grant (the backend says it
    // never lapsed, and the old CMD is gone); a larger one when the grant expired meanwhile.
    expect(Number(second.token)).toBeGreaterThanOrEqual(Number(record!.token))
    expect(run.output()).toContain('campaigning again')
    run.proc.kill('SIGTERM')
    expect((await exitOf(run, 20_000)).code).toBe(5)
  }, 60_000)

  it('exits with 4, in one line, when NAME is held with another --tickets (a final refusal), starting nothing', async () => {
    const dir = tempDir()
    const holder = runChild(['--backend', server.url, '--name', 'jobs/tickets'], dir, 'term-exit:0')
    await until(() => records(dir).length === 1, 20_000, 'the holder’s command')
    const other = runChild(
      ['--backend', server.url, '--name', 'jobs/tickets', '--tickets', '2'],
      dir,
      'exit:0',
    )
    expect((await exitOf(other, 20_000)).code, other.output()).toBe(4)
    const failure = other.output().trim().split('\n').at(-1)!
    expect(failure).toMatch(
      /^conclave: the backend refused \(--backend redis:\/\/[^)]*\): "jobs\/tickets" is held with tickets 1; this candidate asked for tickets 2\./,
    )
    expect(other.output()).not.toMatch(/^\s+at /m)
    expect(records(dir)).toHaveLength(1)
    holder.proc.kill('SIGTERM')
    expect((await exitOf(holder, 20_000)).code).toBe(0)
  })

  it('reports a command that cannot start with 127', async () => {
    const run = conclaveRun(['--backend', server.url, '--name', 'jobs/x', '--', '/nonexistent/cmd'])
    expect((await exitOf(run, 20_000)).code).toBe(127)
    expect(run.output()).toMatch(/could not start: spawn \/nonexistent\/cmd ENOENT/)
  })

  it('prints help, and refuses bad flags with the reason and exit code 2', async () => {
    const help = conclaveRun(['--help'])
    expect((await exitOf(help, 20_000)).code).toBe(0)
    expect(help.output()).toMatch(/CONCLAVE_TOKEN/)
    const cases: [string[], RegExp][] = [
      [['--backend', unused, '--name', 'a/b', 'sleep', '1'], /Put -- before the command/],
      [['--backend', unused, '--name', 'a/b', '--'], /Give the command to run after --/],
      [['--backend', unused, '--', 'true'], /--name NAME is required/],
      [['--name', 'a/b', '--', 'true'], /--backend URL is required/],
      [['--backend', unused, '--name', 'a b', '--', 'true'], /Invalid --name: "a b"/],
      [
        ['--backend', unused, '--name', 'a/b', '--lease', '5y', '--', 'true'],
        /Invalid --lease: "5y"/,
      ],
      [
        ['--backend', unused, '--name', 'a/b', '--tickets', '0', '--', 'true'],
        /Invalid --tickets: "0"/,
      ],
      [
        ['--backend', 'mysql://x', '--name', 'a/b', '--', 'true'],
        /Unknown backend scheme "mysql:"/,
      ],
      [
        ['--backend', unused, '--name', 'a/b', '--leese', '1s', '--', 'true'],
        /Unknown option '--leese'/,
      ],
    ]
    const runs = cases.map(([args]) => conclaveRun(args))
    for (const [i, run] of runs.entries()) {
      expect((await exitOf(run, 20_000)).code, run.output()).toBe(2)
      expect(run.output()).toMatch(cases[i]![1])
    }
  })

  it('names the flag, the value and the rule for every bad duration or number, negative ones too', async () => {
    const flags = (...extra: string[]) => [
      '--backend',
      unused,
      '--name',
      'a/b',
      ...extra,
      '--',
      'true',
    ]
    const lease =
      'It must be a duration such as 500ms, 2s, 1.5s, 2m, 1m30s or 1h (a plain number is milliseconds), from 100ms to 24h.'
    const cases: [string[], string][] = [
      [flags('--lease', '-5s'), `conclave: Invalid --lease: "-5s". ${lease}`],
      [flags('--lease=-5s'), `conclave: Invalid --lease: "-5s". ${lease}`],
      [flags('--lease', '1e3'), `conclave: Invalid --lease: "1e3". ${lease}`],
      [
        flags('--grace', '-1'),
        'conclave: Invalid --grace: "-1". It must be a duration such as 500ms, 2s, 1.5s, 2m, 1m30s or 1h (a plain number is milliseconds), from 0ms to 1h.',
      ],
      [
        flags('--wait', '0'),
        'conclave: Invalid --wait: "0". It must be a duration such as 500ms, 2s, 1.5s, 2m, 1m30s or 1h (a plain number is milliseconds), from 100ms to 168h.',
      ],
      [
        flags('--tickets', '-2'),
        'conclave: Invalid --tickets: "-2". It must be a whole number from 1 to 10000.',
      ],
      [
        flags('--lease'),
        'conclave: --lease needs a value (e.g. --lease 15s). See conclave run --help.',
      ],
      [
        flags('--lease', '--forever'),
        'conclave: --lease needs a value (e.g. --lease 15s). See conclave run --help.',
      ],
    ]
    const runs = cases.map(([args]) => conclaveRun(args))
    for (const [i, run] of runs.entries()) {
      expect((await exitOf(run, 20_000)).code, run.output()).toBe(2)
      expect(run.output().trim()).toBe(cases[i]![1])
    }
  })

  it('refuses memory: and cluster: (separate runners could never agree on them) with exit 2, and starts nothing', async () => {
    const dir = tempDir()
    const runs = {
      memory: runChild(['--backend', 'memory:', '--name', 'jobs/local'], dir, 'exit:0'),
      cluster: runChild(['--backend', 'cluster:', '--name', 'jobs/local'], dir, 'exit:0'),
    }
    for (const [scheme, run] of Object.entries(runs)) {
      expect((await exitOf(run, 20_000)).code, run.output()).toBe(2)
      const out = run.output()
      expect(out).toContain(
        `Invalid --backend: "${scheme}:". conclave run needs a backend that separate processes share`,
      )
      expect(out).toContain('Use a backend the processes share: redis://, postgres:// or etcd://')
      expect(out).toMatch(/local:NAME for the processes of one machine/)
      expect(out.trim().split('\n')).toHaveLength(1)
    }
    expect(runs.cluster.output()).toMatch(/each would host a hub of its own and elect itself/)
    expect(records(dir)).toHaveLength(0)
  })
})

const families = registeredFamilies()

describe('the networked backends registered for the CLI', () => {
  it('include at least one (the cross-process tests below run once per backend)', () => {
    expect(families.length).toBeGreaterThan(0)
  })
})

describe.each(families)('conclave run across processes on %s', (family) => {
  let server: NetworkedServer
  let name = 0
  const resource = () => `run-test/${family}-${++name}`

  beforeAll(async () => {
    server = await startServer(family)
  }, 120_000)
  afterAll(async () => {
    await server?.stop()
  })

  it('runs one command at a time; a SIGKILLed holder takes its command down, and the other starts within about a lease', async () => {
    const dir = tempDir()
    const name = resource()
    const flags = (id: string) => [
      '--backend',
      server.url,
      '--name',
      name,
      '--lease',
      '2s',
      '--id',
      id,
    ]
    const runs = {
      a: runChild(flags('a'), dir, 'grandchild', 'term-exit:3'),
      b: runChild(flags('b'), dir, 'grandchild', 'term-exit:3'),
    }
    // Watch every command ever started: never two alive at once.
    let mostAlive = 0
    let firstDiedAt: number | undefined
    const watch = setInterval(() => {
      const all = records(dir)
      const alive = all.filter((r) => processAlive(r.pid))
      mostAlive = Math.max(mostAlive, alive.length)
      if (all.length === 1 && alive.length === 0) firstDiedAt ??= Date.now()
    }, 10)
    try {
      const [first] = await until(
        () => records(dir).length >= 1 && records(dir),
        30_000,
        'a first command',
      )
      await sleep(1_000)
      expect(records(dir)).toHaveLength(1) // the other waits
      const holder = runs[first!.leaderId as 'a' | 'b']
      const other = runs[first!.leaderId === 'a' ? 'b' : 'a']
      const killedAt = Date.now()
      holder.proc.kill('SIGKILL')
      await until(
        () => !processAlive(first!.pid) && !processAlive(first!.grandchild!),
        5_000,
        'the killed holder’s command and grandchild to die',
      )
      const goneAfterMs = Date.now() - killedAt
      const second = await until(() => records(dir)[1], 20_000, 'the other command to start')
      expect(second.leaderId).not.toBe(first!.leaderId)
      expect(Number(second.token)).toBeGreaterThan(Number(first!.token))
      // The first command was seen dead before the second one started.
      expect(firstDiedAt).toBeDefined()
      expect(firstDiedAt!).toBeLessThanOrEqual(second.at)
      console.log(
        `[${family}] after SIGKILL of the holder: its command and grandchild gone within ${goneAfterMs} ms; the other's command started after ${second.at - killedAt} ms (lease 2000 ms)`,
      )
      other.proc.kill('SIGTERM')
      expect((await exitOf(other, 20_000)).code).toBe(3)
      expect(events(dir, second.pid)).toEqual(['SIGTERM'])
    } finally {
      clearInterval(watch)
    }
    expect(mostAlive).toBe(1)
  }, 90_000)

  it('hands over on SIGTERM by releasing: the waiting one starts long before the lease could expire', async () => {
    const dir = tempDir()
    const name = resource()
    const flags = (id: string) => [
      '--backend',
      server.url,
      '--name',
      name,
      '--lease',
      '60s',
      '--id',
      id,
    ]
    const a = runChild(flags('a'), dir, 'term-exit:0')
    const [first] = await until(() => records(dir).length >= 1 && records(dir), 30_000, 'a command')
    const b = runChild(flags('b'), dir, 'term-exit:0')
    // status shows the holder with the metadata conclave run publishes.
    const status = conclave(['status', '--backend', server.url, name])
    expect((await exitOf(status, 20_000)).code).toBe(0)
    expect(status.output()).toContain(`a  token ${first!.token}`)
    expect(status.output()).toMatch(/"command":"[^"]*run-child\.mjs/)
    await until(() => b.output().includes('waiting for'), 20_000, 'b to campaign')
    await sleep(500)
    expect(records(dir)).toHaveLength(1)
    const sentAt = Date.now()
    a.proc.kill('SIGTERM')
    expect((await exitOf(a, 20_000)).code).toBe(0)
    expect(events(dir, first!.pid)).toEqual(['SIGTERM'])
    // A 60 s lease: only the release can have let b in this soon.
    const second = await until(() => records(dir)[1], 20_000, 'b’s command')
    expect(second.leaderId).toBe('b')
    console.log(`[${family}] handover after SIGTERM: ${second.at - sentAt} ms (lease 60000 ms)`)
    // A waiting conclave run stops on SIGTERM with 128 + 15, having started nothing.
    const c = runChild(flags('c'), dir, 'term-exit:0')
    await until(() => c.output().includes('waiting for'), 20_000, 'c to campaign')
    c.proc.kill('SIGTERM')
    expect((await exitOf(c, 20_000)).code).toBe(128 + 15)
    expect(records(dir)).toHaveLength(2)
    b.proc.kill('SIGTERM')
    expect((await exitOf(b, 20_000)).code).toBe(0)
  }, 90_000)

  it('stops the command when the term is lost (SIGTERM, SIGKILL after the grace) and restarts it with --forever', async () => {
    const proxy: FaultProxy = await startProxy({ targetPort: server.port })
    try {
      const dir = tempDir()
      const run = runChild(
        [
          '--backend',
          server.urlFor(proxy.port),
          '--name',
          resource(),
          '--lease',
          '1500ms',
          '--grace',
          '300ms',
          '--forever',
        ],
        dir,
        'term-ignore',
      )
      const [first] = await until(
        () => records(dir).length >= 1 && records(dir),
        30_000,
        'a command',
      )
      proxy.cut({ mode: 'reset' })
      // Renewals fail: the term ends at its deadline, the command ignores SIGTERM, so it is killed.
      await until(() => !processAlive(first!.pid), 15_000, 'the command to be stopped')
      expect(events(dir, first!.pid)).toEqual(['SIGTERM'])
      expect(run.output()).toMatch(/ended \((expired|lost)\): SIGTERM to the command/)
      proxy.restore()
      const second = await until(() => records(dir)[1], 30_000, 'the command to start again')
      expect(Number(second.token)).toBeGreaterThan(Number(first!.token))
      expect(second.at).toBeGreaterThan(first!.at)
      run.proc.kill('SIGTERM')
      expect((await exitOf(run, 20_000)).code).toBe(128 + 9)
    } finally {
      await proxy.close()
    }
  }, 90_000)
})
