import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { freePort } from '../../testkit/index.js'
import { bundled } from '../../testkit/bundled.js'

// The CLI bundled once for this file (testkit/bundled.ts): it starts in a fraction of tsx's time.
const main = await bundled(fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url)))

/** The environment without color: output is compared as plain text, whatever the terminal. */
function plainEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1' }
  delete env.FORCE_COLOR
  return env
}

function conclave(
  args: string[],
  timeoutMs = 60_000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [main, ...args], {
      env: plainEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(
        new Error(
          `conclave ${args.join(' ')} did not finish in ${timeoutMs} ms\n${stdout}\n${stderr}`,
        ),
      )
    }, timeoutMs)
    child.on('exit', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}

describe('conclave CLI', () => {
  it('runs the demo: a crash failover and a graceful handoff per phase, never too many holders', async () => {
    const { code, stdout } = await conclave(['demo', '--lease', '1s'])
    expect(code, stdout).toBe(0)
    const rows = stdout.split('\n').filter((l) => /^\| [12] \|/.test(l))
    expect(rows).toHaveLength(2)
    for (const row of rows) {
      const cells = row.split('|').map((c) => c.trim())
      expect(cells[4]).toBe('yes') // token order
      expect(cells[5]).toMatch(/^\d+\.\d ms$/) // crash failover measured
      expect(cells[6]).toMatch(/^\d+\.\d ms$/) // graceful handoff measured
      expect(Number(cells[7])).toBeLessThanOrEqual(Number(cells[1])) // most holders <= tickets
    }
    expect(stdout).toContain('never more holders than tickets: yes')
  })

  it('prints help, and refuses bad commands and flags with the reason', async () => {
    const help = await conclave(['--help'])
    expect(help.code).toBe(0)
    expect(help.stdout).toMatch(/conclave demo/)
    const demoHelp = await conclave(['demo', '--help'])
    expect(demoHelp.stdout).toMatch(/Forks N workers/)
    const unknown = await conclave(['elect'])
    expect(unknown.code).toBe(2)
    expect(unknown.stderr).toMatch(/Unknown command "elect"/)
    const badFlag = await conclave(['demo', '--workers', 'many'])
    expect(badFlag.code).toBe(2)
    expect(badFlag.stderr).toMatch(
      /Invalid --workers: "many"\. It must be a whole number from 2 to 32/,
    )
    const unknownFlag = await conclave(['demo', '--leese', '5'])
    expect(unknownFlag.code).toBe(2)
    expect(unknownFlag.stderr).toMatch(/Unknown option '--leese'/)
    const badUrl = await conclave(['status', '--backend', 'nope', 'a/b'])
    expect(badUrl.code).toBe(2)
    expect(badUrl.stderr).toMatch(/Invalid --backend: "nope"\. A backend is a URL/)
    const badScheme = await conclave(['status', '--backend', 'mysql://x', 'a/b'])
    expect(badScheme.stderr).toMatch(/Unknown backend scheme "mysql:"/)
    const badName = await conclave(['status', '--backend', 'redis://127.0.0.1:1', 'a b'])
    expect(badName.stderr).toMatch(/Invalid NAME: "a b"/)
  })

  it('lists its exit codes in --help, and names the flag, value and rule of a bad demo --lease', async () => {
    const help = await conclave(['--help'])
    for (const code of ['0', '1', '2', '3', '4'])
      expect(help.stdout).toMatch(new RegExp(`^ {2}${code} `, 'm'))
    expect(help.stdout).toMatch(/--debug/)
    expect((await conclave(['run', '--help'])).stdout).toMatch(
      /^ {2}3 +the backend is unreachable/m,
    )
    const lease = await conclave(['demo', '--lease', '-5'])
    expect(lease.code).toBe(2)
    expect(lease.stderr.trim()).toBe(
      'conclave: Invalid --lease: "-5". It must be a duration such as 500ms, 2s, 1.5s, 2m, 1m30s or 1h (a plain number is milliseconds), from 100ms to 1m.',
    )
  })

  it('refuses memory: and cluster: for status and watch (exit 2), saying why and what to use', async () => {
    const runs = await Promise.all([
      conclave(['status', '--backend', 'memory:', 'jobs/nightly']),
      conclave(['watch', '--backend', 'cluster:', 'jobs/nightly']),
    ])
    for (const [i, { code, stderr }] of runs.entries()) {
      expect(code, stderr).toBe(2)
      expect(stderr).toContain(
        i === 0
          ? 'Invalid --backend: "memory:". conclave status needs a backend that separate processes share, and memory: keeps its grants inside one process'
          : 'Invalid --backend: "cluster:". conclave watch needs a backend that separate processes share, and cluster: works only between the node:cluster workers of one app',
      )
      expect(stderr).toContain('redis://, postgres:// or etcd://')
      expect(stderr).toMatch(/local:NAME for the processes of one machine/)
    }
  })

  it('reports an unreachable backend in one line with its cause and exit code 3, never its password; the stack only with --debug', async () => {
    const port = await freePort() // nothing listens there: connections are refused
    const urls = [
      `postgres://app:hunter2@127.0.0.1:${port}/app`,
      `etcd://127.0.0.1:${port}`,
      `redis://app:hunter2@127.0.0.1:${port}`,
    ]
    const runs = await Promise.all(
      urls.map((url) => conclave(['status', '--backend', url, 'jobs/a'])),
    )
    for (const [i, { code, stdout, stderr }] of runs.entries()) {
      expect(code, stderr).toBe(3)
      expect(stdout).toBe('')
      const lines = stderr.trim().split('\n')
      expect(lines, stderr).toHaveLength(1)
      expect(lines[0]).toMatch(/^conclave: the backend is unreachable or refused \(--backend /)
      expect(lines[0]).toContain(urls[i]!.replace(':hunter2@', ':***@'))
      expect(stderr).not.toContain('hunter2')
      expect(stderr).not.toMatch(/^\s+at /m)
    }
    // The cause (a refused connection) is in the line, said once.
    expect(runs[0]!.stderr).toMatch(/ECONNREFUSED 127\.0\.0\.1/)
    expect(runs[1]!.stderr).toMatch(/ECONNREFUSED 127\.0\.0\.1/)
    expect(runs[0]!.stderr.match(/ECONNREFUSED/g)).toHaveLength(1)

    const debug = await conclave(['status', '--debug', '--backend', urls[0]!, 'jobs/a'])
    expect(debug.code).toBe(3)
    expect(debug.stderr).toMatch(/^\s+at /m)
    expect(debug.stderr).toMatch(/^caused by: Error: connect ECONNREFUSED/m)
    expect(debug.stderr).not.toContain('hunter2')
  })

  it('never echoes a password, even in a URL it refuses', async () => {
    const { code, stderr } = await conclave([
      'status',
      '--backend',
      'mysql://root:hunter2@db/x',
      'a/b',
    ])
    expect(code).toBe(2)
    expect(stderr).toContain(
      'Invalid --backend: "mysql://root:***@db/x". Unknown backend scheme "mysql:"',
    )
    expect(stderr).not.toContain('hunter2')
  })
})
