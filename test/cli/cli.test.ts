import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const main = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url))

function conclave(
  args: string[],
  timeoutMs = 60_000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', main, ...args], {
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
    const { code, stdout } = await conclave(['demo', '--lease', '1000'])
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
    const badName = await conclave(['status', '--backend', 'memory:', 'a b'])
    expect(badName.stderr).toMatch(/Invalid NAME: "a b"/)
  })

  it('shows status on a backend named by URL', async () => {
    const { code, stdout } = await conclave(['status', '--backend', 'memory:', 'jobs/nightly'])
    expect(code).toBe(0)
    expect(stdout).toContain('jobs/nightly: no holder')
  })
})
