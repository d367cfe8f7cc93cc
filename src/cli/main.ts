#!/usr/bin/env node
/**
 * The `conclave` command line.
 *   conclave demo [--workers N] [--tickets N] [--lease D]
 *   conclave status [--json] --backend URL NAME...
 *   conclave watch [--json] --backend URL NAME
 *   conclave run --backend URL --name NAME [--tickets N] [--lease 15s] [--grace 10s] [--wait D] [--forever] -- CMD ARGS...
 *   conclave --version
 */
import { createRequire } from 'node:module'
import { parseArgs } from 'node:util'
import { UsageError } from '../errors.js'
import {
  DURATION_RULE,
  formatDuration,
  parseDuration,
  validateCandidate,
  validateResource,
} from '../validate.js'
import { BACKEND_SCHEMES, backendFromUrl, requireSharedBackend } from './backends.js'
import { demoWorker, isDemoWorker, runDemo } from './demo.js'
import { palette } from './color.js'
import { describeError, describeStack, EXIT, exitCodeOf, redact } from './report.js'
import { runCommand } from './run.js'
import { printStatus, watchHolders } from './status.js'

/** This package's version (package.json sits two folders up, from src/cli and dist/cli). */
function version(): string {
  return (createRequire(import.meta.url)('../../package.json') as { version: string }).version
}

/** Backends separate CLI processes can share (memory: and cluster: live in one process). */
const SHARED_SCHEMES = BACKEND_SCHEMES.filter((s) => s !== 'memory:' && s !== 'cluster:')

const EXIT_CODES = `Exit codes:
  0    success (conclave run: otherwise CMD's own code, 128 + N if CMD died by signal N,
       127 if CMD was not found, 126 if it could not start)
  1    an unexpected error: a bug in conclave (--debug prints the stack; please report it)
  2    a bad command, flag, value, URL or resource name, or a one-process backend
       (memory:, cluster:) where separate processes must agree
  3    the backend is unreachable or refused us: connection refused, timeout, DNS, TLS,
       authentication, or its client package (ioredis, pg, etcd3) is not installed
  4    the backend refused for good: NAME is held with another --tickets
  5    conclave run --wait D: not elected within D (CMD never started)
  6    conclave run: the term was lost while CMD ran, so CMD was stopped (without --forever)
Errors are one line with their causes; --debug (any command) adds the stack. Passwords in
URLs are never printed (redis://user:***@host).`

const HELP: Record<string, string> = {
  main: `conclave: leader election and singletons for Node.js

Usage:
  conclave demo [--workers N] [--tickets N] [--lease D]    a live failover demo, no server needed
  conclave status [--json] --backend URL NAME...           who holds each resource now
  conclave watch [--json] --backend URL NAME               one line per change of holders
  conclave run --backend URL --name NAME [...] -- CMD...   run CMD only while holding NAME
  conclave <command> --help
  conclave --version

Durations (--lease, --grace, --wait): 500ms, 2s, 1.5s, 2m, 1m30s, 1h, or a plain number of
milliseconds. Color only on a terminal, never with NO_COLOR set; FORCE_COLOR=1 forces it.

Backend URLs for run, status and watch: ${SHARED_SCHEMES.map((s) => `${s}//...`).join(' ')}
(memory: and cluster: keep their state inside one process or one node:cluster app, so
separate conclave processes could never agree on them; local:NAME serves the processes of
one machine).

${EXIT_CODES}`,
  demo: `conclave demo [--workers N] [--tickets N] [--lease D]

Forks N workers (default 4) that elect a leader over node:cluster IPC, SIGKILLs a holder,
closes one gracefully, and shows each failover time and token; then the same with 2 tickets
(or only the --tickets you give). Stops by itself and prints a summary. --lease D is the
lease (default 3s, from 100ms to 1m): 500ms, 1.5s, 3s, 1m or a number of milliseconds.`,
  status: `conclave status [--json] --backend URL NAME...

Prints the holders of each named resource: candidate, token, time left, metadata, and
what the backend can tell of its waiters. --json: one JSON object on one line,
{ time, backend, resources: [{ resource, holders: [{ candidate, token, remainingMs,
metadata }], waiters: [{ candidate, remainingMs, metadata }] }] } (waiters is null where
the backend cannot list them).
URL: ${SHARED_SCHEMES.join(' ')} (see conclave --help for exit codes).`,
  watch: `conclave watch [--json] --backend URL NAME

Prints the holders of NAME now and again on every change, until interrupted (Ctrl-C).
While the backend is unreachable it prints one "unreachable since TIME" line, keeps
retrying, and prints "reconnected" with the holders when it answers again. --json: one
JSON object per line, { time, event: "holders" | "unreachable" | "reconnected", resource,
holders | since, error | downMs }.
URL: ${SHARED_SCHEMES.join(' ')} (see conclave --help for exit codes).`,
  run: `conclave run --backend URL --name NAME [options] -- CMD [ARGS...]

Campaigns for NAME and runs CMD only while holding it. CMD gets CONCLAVE_TOKEN (the fencing
token), CONCLAVE_LEADER_ID and CONCLAVE_RESOURCE in its environment. When the term ends, CMD's
process group gets SIGTERM, then SIGKILL after the grace period. SIGINT, SIGTERM, SIGHUP,
SIGQUIT, SIGUSR1 and SIGUSR2 are forwarded to CMD (SIGINT/SIGTERM/SIGHUP/SIGQUIT also stop
conclave run once CMD exits, with SIGKILL after the grace). When CMD exits, the grant is
released and conclave run exits with CMD's code (128 + N if it died by signal N). If conclave
run dies, even by SIGKILL, CMD and its descendants are killed with it.

Options:
  --backend URL    where the lease lives, shared by every runner (${SHARED_SCHEMES.join(' ')})
  --name NAME      the resource, e.g. jobs/nightly
  --tickets N      how many may hold NAME at once (default 1; all must agree)
  --lease D        lease length (default 15s); D is 500ms, 15s, 2m or a number of ms
  --grace D        time between SIGTERM and SIGKILL (default 10s)
  --wait D         give up with exit code 5 if not elected within D (each campaign)
  --forever        after a lost term, campaign again and restart CMD (else exit 6)
  --id ID          this candidate's id (default host:pid:random)
  --debug          print the stack of an error

${EXIT_CODES}`,
}

/** The flags that take a value, per command, with an example for "needs a value". */
const VALUE_FLAGS: Record<string, Record<string, string>> = {
  demo: { workers: '4', tickets: '2', lease: '3s' },
  status: { backend: 'redis://127.0.0.1:6379' },
  watch: { backend: 'redis://127.0.0.1:6379' },
  run: {
    backend: 'redis://127.0.0.1:6379',
    name: 'jobs/nightly',
    tickets: '1',
    lease: '15s',
    grace: '10s',
    wait: '30s',
    id: 'worker-1',
  },
}

/**
 * Makes `--flag -5s` mean the value "-5s" (node's parser calls it ambiguous, and its message
 * says nothing of the flag's rule), so the flag's own check names the flag, value and rule.
 * A value flag followed by nothing or by another option gets a message of its own.
 */
function normalizeValueFlags(command: string, args: string[]): string[] {
  const flags = VALUE_FLAGS[command] ?? {}
  const out: string[] = []
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!
    const flag = arg.startsWith('--') ? arg.slice(2) : undefined
    if (flag === undefined || !(flag in flags)) {
      out.push(arg)
      continue
    }
    const next = args[i + 1]
    if (next === undefined || next === '--' || /^-[-a-zA-Z]/.test(next)) {
      throw new UsageError(
        `--${flag} needs a value (e.g. --${flag} ${flags[flag]}). See conclave ${command} --help.`,
      )
    }
    out.push(`--${flag}=${next}`)
    i++
  }
  return out
}

function positiveInt(
  flag: string,
  value: string | undefined,
  fallback: number,
  min = 1,
  max = 64,
): number {
  if (value === undefined) return fallback
  const n = Number(value)
  if (!/^\s*\d+\s*$/.test(value) || !Number.isInteger(n) || n < min || n > max) {
    throw new UsageError(
      `Invalid --${flag}: "${value}". It must be a whole number from ${min} to ${max}.`,
    )
  }
  return n
}

/** A duration flag (validate.ts's parseDuration: `15s`, `1m30s`, a number of ms), within bounds. */
function duration(
  flag: string,
  value: string | undefined,
  fallback: number,
  min: number,
  max: number,
): number {
  if (value === undefined) return fallback
  const ms = parseDuration(value)
  if (ms === undefined || ms < min || ms > max) {
    throw new UsageError(
      `Invalid --${flag}: "${value}". It must be ${DURATION_RULE}, from ${formatDuration(min)} to ${formatDuration(max)}.`,
    )
  }
  return ms
}

/** Set once the command has named its backend: failures then say which one (redacted). */
let backendInUse: string | undefined

async function main(argv: string[]): Promise<number> {
  if (isDemoWorker()) {
    const i = argv.indexOf('--conclave-demo-worker')
    await demoWorker(argv[i + 1]!, Number(argv[i + 2]), Number(argv[i + 3]))
    return 0
  }
  const [command, ...rest] = argv
  if (command === '--version' || command === '-V' || command === 'version') {
    console.log(version())
    return EXIT.ok
  }
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    console.log(HELP.main)
    return command === undefined ? EXIT.usage : EXIT.ok
  }
  if (!(command in HELP) || command === 'main') {
    throw new UsageError(
      `Unknown command "${command}". Commands: demo, status, watch, run. See conclave --help.`,
    )
  }
  if (command === 'run') return run(rest)
  let parsed
  try {
    parsed = parseArgs({
      args: normalizeValueFlags(command, rest),
      allowPositionals: command !== 'demo',
      strict: true,
      options: {
        help: { type: 'boolean', short: 'h' },
        workers: { type: 'string' },
        tickets: { type: 'string' },
        lease: { type: 'string' },
        backend: { type: 'string' },
        json: { type: 'boolean' },
      },
    })
  } catch (error) {
    if (error instanceof UsageError) throw error
    throw new UsageError(`${(error as Error).message}. See conclave ${command} --help.`)
  }
  const { values, positionals } = parsed
  if (values.help) {
    console.log(HELP[command])
    return EXIT.ok
  }
  if (command === 'demo') {
    for (const flag of ['backend', 'json'] as const) {
      if (values[flag] !== undefined)
        throw new UsageError(
          `--${flag} does not apply to demo (it always uses the cluster backend).`,
        )
    }
    const tickets =
      values.tickets === undefined ? undefined : positiveInt('tickets', values.tickets, 1, 1, 16)
    const workers = positiveInt('workers', values.workers, 4, 2, 32)
    if (tickets !== undefined && tickets >= workers) {
      throw new UsageError(
        `Invalid --tickets: ${tickets}. The demo needs more workers (${workers}) than tickets to show a failover.`,
      )
    }
    const ok = await runDemo({
      workers,
      leaseMs: duration('lease', values.lease, 3_000, 100, 60_000),
      phases: tickets === undefined ? [1, 2] : [tickets],
      out: (line) => console.log(line),
    })
    return ok ? EXIT.ok : EXIT.unexpected
  }
  // status and watch
  if (values.backend === undefined)
    throw new UsageError(`--backend URL is required. See conclave ${command} --help.`)
  requireSharedBackend(values.backend, '--backend', `conclave ${command}`)
  for (const flag of ['workers', 'tickets', 'lease'] as const) {
    if (values[flag] !== undefined) throw new UsageError(`--${flag} does not apply to ${command}.`)
  }
  if (positionals.length === 0)
    throw new UsageError(`Name at least one resource. See conclave ${command} --help.`)
  if (command === 'watch' && positionals.length !== 1)
    throw new UsageError('watch takes exactly one resource name.')
  positionals.forEach((name) => validateResource(name, 'NAME'))
  backendInUse = values.backend
  const backend = await backendFromUrl(values.backend, '--backend')
  const output = {
    json: values.json ?? false,
    out: (line: string) => console.log(line),
    color: palette(process.stdout),
  }
  try {
    if (command === 'status') {
      await printStatus(backend, positionals, output)
      return EXIT.ok
    }
    const controller = new AbortController()
    process.once('SIGINT', () => controller.abort())
    process.once('SIGTERM', () => controller.abort())
    await watchHolders(backend, positionals[0]!, output, controller.signal)
    return EXIT.ok
  } finally {
    await backend.close()
  }
}

async function run(args: string[]): Promise<number> {
  const split = args.indexOf('--')
  const flags = split === -1 ? args : args.slice(0, split)
  let values
  try {
    ;({ values } = parseArgs({
      args: normalizeValueFlags('run', flags),
      allowPositionals: false,
      strict: true,
      options: {
        help: { type: 'boolean', short: 'h' },
        backend: { type: 'string' },
        name: { type: 'string' },
        tickets: { type: 'string' },
        lease: { type: 'string' },
        grace: { type: 'string' },
        wait: { type: 'string' },
        forever: { type: 'boolean' },
        id: { type: 'string' },
      },
    }))
  } catch (error) {
    if (error instanceof UsageError) throw error
    const hint =
      split === -1 ? ' Put -- before the command: conclave run [options] -- CMD ARGS...' : ''
    throw new UsageError(`${(error as Error).message}.${hint} See conclave run --help.`)
  }
  if (values.help) {
    console.log(HELP.run)
    return EXIT.ok
  }
  if (values.backend === undefined)
    throw new UsageError('--backend URL is required. See conclave run --help.')
  requireSharedBackend(values.backend, '--backend', 'conclave run')
  if (values.name === undefined)
    throw new UsageError('--name NAME is required. See conclave run --help.')
  const command = split === -1 ? [] : args.slice(split + 1)
  if (command.length === 0 || command[0] === '')
    throw new UsageError('Give the command to run after --: conclave run [options] -- CMD ARGS...')
  const name = validateResource(values.name, '--name')
  const tickets = positiveInt('tickets', values.tickets, 1, 1, 10_000)
  const leaseMs = duration('lease', values.lease, 15_000, 100, 86_400_000)
  const graceMs = duration('grace', values.grace, 10_000, 0, 3_600_000)
  backendInUse = values.backend
  const code = await runCommand({
    backend: values.backend,
    name,
    tickets,
    leaseMs,
    graceMs,
    forever: values.forever ?? false,
    waitMs:
      // At least 100 ms: a shorter wait could never see a campaign's first answer (0 gave up
      // before asking).
      values.wait === undefined ? undefined : duration('wait', values.wait, 0, 100, 86_400_000 * 7),
    id: values.id === undefined ? undefined : validateCandidate(values.id, '--id'),
    command,
    log: (line) => console.error(redact(`${stderrColor.dim('conclave run:')} ${line}`)),
  })
  // Nothing may keep this process around once the command is over and the grant released.
  process.exit(code)
}

const stderrColor = palette(process.stderr)

/** Prints a failure as one line (the stack too with --debug) and picks its exit code. */
function fail(error: unknown, debug: boolean): number {
  const code = exitCodeOf(error)
  const where = backendInUse === undefined ? '' : ` (--backend ${redact(backendInUse)})`
  const what =
    code === EXIT.backend
      ? `the backend is unreachable or refused${where}: `
      : code === EXIT.conflict
        ? `the backend refused${where}: `
        : code === EXIT.unexpected
          ? 'unexpected error: '
          : ''
  const tail = code === EXIT.unexpected && !debug ? ' (--debug prints the stack)' : ''
  console.error(`${stderrColor.red('conclave:')} ${what}${describeError(error)}${tail}`)
  if (debug) console.error(describeStack(error))
  return code
}

// --debug is taken out wherever it is (before a `conclave run`'s --, which starts CMD's own args).
const argv = process.argv.slice(2)
const end = argv.indexOf('--') === -1 ? argv.length : argv.indexOf('--')
const debug = argv.slice(0, end).includes('--debug')
const args = debug ? argv.filter((arg, i) => i >= end || arg !== '--debug') : argv

main(args).then(
  (code) => {
    process.exitCode = code
  },
  (error: unknown) => {
    process.exitCode = fail(error, debug)
  },
)
