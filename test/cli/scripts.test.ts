// The CLI for scripts and people, against real redis-servers: --version, status/watch --json,
// watch through an outage (the server killed and restarted), run --wait (exit 5), a term lost
// while CMD ran (exit 6), why run waits on a fresh server (its startup grace), durations in
// every form, and color only where it belongs.
import { type ChildProcess, spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { redisBackend } from '../../src/backends/redis/index.js'
import { Election } from '../../src/election.js'
import { freePort, startProxy, startRedis, type RedisServer } from '../../testkit/index.js'
import { until } from '../helpers/wait.js'
import { bundled } from '../../testkit/bundled.js'

const root = fileURLToPath(new URL('../../', import.meta.url))
// The CLI bundled once for this file (testkit/bundled.ts): it starts in a fraction of tsx's time.
const main = await bundled(fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url)))

interface Cli {
  proc: ChildProcess
  stdout: () => string
  stderr: () => string
  exited: Promise<number | null>
}
const running: Cli[] = []

function cli(args: string[], env: NodeJS.ProcessEnv = {}): Cli {
  const proc = spawn(process.execPath, [main, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '', FORCE_COLOR: '', ...env },
  })
  let stdout = ''
  let stderr = ''
  proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)))
  const run = { proc, stdout: () => stdout, stderr: () => stderr, exited }
  running.push(run)
  return run
}

async function exitOf(run: Cli, timeoutMs = 30_000): Promise<number | null> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      run.exited,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no exit in ${timeoutMs} ms:\n${run.stdout()}\n${run.stderr()}`)),
          timeoutMs,
        )
      }),
    ])
  } finally {
    clearTimeout(timer)
  }
}

afterEach(async () => {
  for (const run of running.splice(0)) {
    if (run.proc.exitCode === null && run.proc.signalCode === null) {
      run.proc.kill('SIGKILL')
      await run.exited
    }
  }
})

let server: RedisServer
let url: string
const closers: (() => Promise<void> | void)[] = []
beforeAll(async () => {
  server = await startRedis()
  // Leases up to 2 m below: over the default maxLeaseMs (60 s), which the URL must then raise.
  url = `redis://127.0.0.1:${server.port}?startupGrace=false&maxLeaseMs=120000`
}, 60_000)
afterAll(async () => {
  for (const close of closers.splice(0).reverse()) await close()
  await server?.stop()
})

let n = 0
const resource = () => `cli/scripts-${process.pid}-${n++}`

/** Holds `name` from this process until the returned function is called. */
async function hold(name: string, leaseMs = 10_000) {
  const backend = redisBackend({ url })
  const election = new Election(backend, name, {
    leaseMs,
    id: 'test-holder',
    metadata: { by: 'test' },
  })
  election.on('error', () => {})
  const term = await election.campaign()
  const close = async () => {
    await election.close()
    await backend.close()
  }
  closers.push(close)
  return { term, close }
}

describe('conclave for scripts', () => {
  it('prints its version', async () => {
    const { version } = JSON.parse(readFileSync(`${root}package.json`, 'utf8')) as {
      version: string
    }
    for (const flag of ['--version', '-V']) {
      const run = cli([flag])
      expect(await exitOf(run)).toBe(0)
      expect(run.stdout().trim()).toBe(version)
    }
  })

  it('status --json: one JSON object with holders and waiters (redis lists its line)', async () => {
    const name = resource()
    const { term } = await hold(name)
    const run = cli(['status', '--json', '--backend', url, name, `${name}-free`])
    expect(await exitOf(run), run.stderr()).toBe(0)
    const lines = run.stdout().trim().split('\n')
    expect(lines).toHaveLength(1)
    const status = JSON.parse(lines[0]!) as {
      backend: string
      resources: {
        resource: string
        holders: Record<string, unknown>[]
        waiters: unknown
      }[]
    }
    expect(status.backend).toBe('redis')
    expect(status.resources.map((r) => r.resource)).toEqual([name, `${name}-free`])
    const [holder, ...others] = status.resources[0]!.holders
    expect(others).toEqual([])
    expect(holder).toMatchObject({
      candidate: 'test-holder',
      token: term.token,
      metadata: { by: 'test' },
    })
    expect(typeof holder!.remainingMs).toBe('number')
    expect(status.resources[1]!.holders).toEqual([])
    // The redis backend lists its line (Backend.waiters): empty here, not null (not reported).
    expect(status.resources.map((r) => r.waiters)).toEqual([[], []])
    const text = cli(['status', '--backend', url, name])
    expect(await exitOf(text)).toBe(0)
    expect(text.stdout()).toMatch(/\n {2}no waiter\n/)
  })

  it('run --wait gives up with exit 5 when not elected in time, and never starts CMD', async () => {
    const name = resource()
    await hold(name)
    const run = cli([
      'run',
      '--backend',
      url,
      '--name',
      name,
      '--wait',
      '1.5s',
      '--',
      'sh',
      '-c',
      'echo STARTED',
    ])
    expect(await exitOf(run)).toBe(5)
    expect(run.stdout()).not.toContain('STARTED')
    expect(run.stderr()).toMatch(/waiting for .*, at most 1\.5s/)
    expect(run.stderr()).toMatch(/waiting: every ticket \(1\) is held by test-holder \(held;/)
    expect(run.stderr()).toMatch(/not elected within 1\.5s \(--wait\): giving up/)
  })

  it('run --wait lets a campaign that wins in time run CMD', async () => {
    const run = cli([
      'run',
      '--backend',
      url,
      '--name',
      resource(),
      '--wait',
      '1m30s',
      '--lease',
      '1m30s',
      '--',
      'sh',
      '-c',
      'exit 7',
    ])
    expect(await exitOf(run), run.stderr()).toBe(7)
  })

  it('exits with 6 when the term is lost while CMD runs (without --forever)', async () => {
    const proxy = await startProxy({ targetPort: server.port })
    closers.push(() => proxy.close())
    const run = cli([
      'run',
      '--backend',
      `redis://127.0.0.1:${proxy.port}?startupGrace=false`,
      '--name',
      resource(),
      '--lease',
      '1500ms',
      '--grace',
      '200ms',
      '--',
      'sh',
      '-c',
      'echo STARTED; trap "exit 0" TERM; while :; do sleep 0.05; done',
    ])
    await until(() => run.stdout().includes('STARTED'), 20_000, 'CMD to start')
    proxy.cut({ mode: 'reset' })
    // CMD exits 0 on SIGTERM: the code says the term was lost, not CMD's 0.
    expect(await exitOf(run)).toBe(6)
    expect(run.stderr()).toMatch(/ended \((expired|lost)\): SIGTERM to the command/)
    expect(run.stderr()).toMatch(/exiting with 6: the term was lost while the command ran/)
  })

  it('takes every duration form the same way in every command (demo included)', async () => {
    for (const lease of ['1m30s', '1.5s', '2s', '500ms', '2500']) {
      const run = cli([
        'run',
        '--backend',
        url,
        '--name',
        resource(),
        '--lease',
        lease,
        '--grace',
        '1s500ms',
        '--',
        'true',
      ])
      expect(await exitOf(run), `${lease}: ${run.stderr()}`).toBe(0)
    }
    // Without maxLeaseMs, a lease over its 60 s default is refused, saying what to give.
    const long = cli([
      'run',
      '--backend',
      `redis://127.0.0.1:${server.port}?startupGrace=false`,
      '--name',
      resource(),
      '--lease',
      '1m30s',
      '--',
      'true',
    ])
    expect(await exitOf(long)).toBe(2)
    expect(long.stderr()).toMatch(
      /leaseMs must be at most the redis backend's maxLeaseMs \(60000\).*\?maxLeaseMs=90000/s,
    )
    // demo's range is 100ms to 1m: 1m30s is read (and refused for its size), 30s1m is not a duration.
    const big = cli(['demo', '--lease', '1m30s'])
    expect(await exitOf(big)).toBe(2)
    expect(big.stderr()).toMatch(/Invalid --lease: "1m30s"\. .* from 100ms to 1m\./)
    const bad = cli(['run', '--backend', url, '--name', 'a/b', '--wait', '30s1m', '--', 'true'])
    expect(await exitOf(bad)).toBe(2)
    expect(bad.stderr()).toMatch(
      /Invalid --wait: "30s1m"\. It must be a duration such as 500ms, 2s, 1\.5s, 2m, 1m30s or 1h/,
    )
  })
})

describe('conclave watch through an outage', () => {
  it('prints timestamped unreachable and reconnected lines, and keeps watching (text and --json)', async () => {
    const own = await startRedis()
    closers.push(() => own.stop())
    const ownUrl = `redis://127.0.0.1:${own.port}?startupGrace=false`
    const name = resource()
    const text = cli(['watch', '--backend', ownUrl, name])
    const json = cli(['watch', '--json', '--backend', ownUrl, name])
    await until(
      () => text.stdout().includes('no holder') && json.stdout().includes('"holders"'),
      20_000,
      'first lines',
    )
    await own.kill()
    await until(
      () => text.stdout().includes('unreachable') && json.stdout().includes('"unreachable"'),
      20_000,
      `unreachable lines:\n${text.stdout()}\n${json.stdout()}`,
    )
    await own.restart()
    await until(
      () => text.stdout().includes('reconnected') && json.stdout().includes('"reconnected"'),
      30_000,
      `reconnected lines:\n${text.stdout()}\n${json.stdout()}`,
    )
    // Still watching: a new holder is printed.
    const backend = redisBackend({ url: ownUrl })
    const election = new Election(backend, name, { id: 'after-outage' })
    closers.push(async () => {
      await election.close()
      await backend.close()
    })
    await election.campaign()
    await until(
      () => text.stdout().includes('after-outage#') && json.stdout().includes('"after-outage"'),
      20_000,
      'the new holder',
    )
    const stamp = '\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z'
    expect(text.stdout()).toMatch(
      new RegExp(`^${stamp}  ${name}: unreachable \\(noticed at ${stamp}, retrying\\): `, 'm'),
    )
    // After the reconnect, the holders (still none) are printed once, not by both the probe
    // and the observer.
    const afterReconnect = text.stdout().split('reconnected')[1]!.split('after-outage#')[0]!
    expect(afterReconnect.match(/no holder/g)).toHaveLength(1)
    expect(text.stdout()).toMatch(new RegExp(`^${stamp}  ${name}: reconnected after \\d`, 'm'))
    const events = json
      .stdout()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { event: string; time: string; resource: string })
    expect(events.every((e) => e.resource === name && !Number.isNaN(Date.parse(e.time)))).toBe(true)
    const kinds = events.map((e) => e.event)
    expect(kinds[0]).toBe('holders')
    expect(kinds.indexOf('unreachable')).toBeGreaterThan(0)
    expect(kinds.indexOf('reconnected')).toBeGreaterThan(kinds.indexOf('unreachable'))
    expect(kinds.filter((k) => k === 'unreachable')).toHaveLength(1)
    for (const run of [text, json]) {
      expect(run.proc.exitCode).toBeNull() // it never ended on the errors
      run.proc.kill('SIGTERM')
      expect(await exitOf(run)).toBe(0)
    }
  }, 120_000)
})

describe('color', () => {
  const ESC = '\x1b['
  it('none through a pipe, some with FORCE_COLOR, never with NO_COLOR', async () => {
    const name = resource()
    await hold(name)
    const plain = cli(['status', '--backend', url, name])
    const forced = cli(['status', '--backend', url, name], { FORCE_COLOR: '1' })
    const never = cli(['status', '--backend', url, name], { FORCE_COLOR: '1', NO_COLOR: '1' })
    const json = cli(['status', '--json', '--backend', url, name], { FORCE_COLOR: '1' })
    for (const run of [plain, forced, never, json]) expect(await exitOf(run)).toBe(0)
    expect(plain.stdout()).not.toContain(ESC)
    expect(forced.stdout()).toContain(ESC)
    expect(never.stdout()).not.toContain(ESC)
    expect(json.stdout()).not.toContain(ESC)
  })

  it('some on a terminal (a real pty, through script(1)), none there with NO_COLOR', async () => {
    const name = resource()
    await hold(name)
    const onTty = (env: NodeJS.ProcessEnv) =>
      new Promise<string>((resolve) => {
        const command = [process.execPath, main, 'status', '--backend', `'${url}'`, name].join(' ')
        const proc = spawn('script', ['-qec', command, '/dev/null'], {
          env: { ...process.env, NO_COLOR: '', FORCE_COLOR: '', TERM: 'xterm', ...env },
          stdio: ['ignore', 'pipe', 'pipe'],
        })
        let out = ''
        proc.stdout.on('data', (d: Buffer) => (out += d.toString()))
        proc.on('exit', () => resolve(out))
      })
    const tty = await onTty({})
    expect(tty).toContain('test-holder')
    expect(tty).toContain(ESC)
    const noColor = await onTty({ NO_COLOR: '1' })
    expect(noColor).toContain('test-holder')
    expect(noColor).not.toContain(ESC)
  })
})

describe('conclave run on a fresh redis', () => {
  it('says it waits for the startup grace, and how long, then runs CMD', async () => {
    // The CLI starts first and reaches for a server that is not up yet, so its first ask comes
    // right after the start, however slow the machine is to start a CLI.
    const port = await freePort()
    const run = cli([
      'run',
      '--backend',
      `redis://127.0.0.1:${port}`,
      '--name',
      resource(),
      '--lease',
      '5s',
      '--',
      'sh',
      '-c',
      'exit 0',
    ])
    await until(
      () => run.stderr().includes('conclave run: waiting for'),
      30_000,
      'the CLI to start',
    )
    const fresh = await startRedis({ port })
    closers.push(() => fresh.stop())
    expect(await exitOf(run), run.stderr()).toBe(0)
    expect(run.stderr()).toMatch(
      new RegExp(
        `conclave run: waiting: the redis server at 127\\.0\\.0\\.1:${fresh.port} has been up for less than the lease \\(5000 ms\\) plus 1 s.* \\(startup-grace; asking again within \\d`,
      ),
    )
    const lines = run.stderr().split('\n')
    const waited = lines.findIndex((l) => l.includes('startup-grace'))
    const held = lines.findIndex((l) => l.includes('conclave run: holding'))
    expect(waited).toBeGreaterThan(-1)
    expect(held).toBeGreaterThan(waited)
  })
})
