#!/usr/bin/env node
/**
 * The `conclave` command line.
 *   conclave demo [--workers N] [--tickets N] [--lease MS]
 *   conclave status --backend URL NAME...
 *   conclave watch --backend URL NAME
 *   conclave run --backend URL --name NAME [--tickets N] [--lease 15s] [--grace 10s] [--forever] -- CMD ARGS...
 */
import { parseArgs } from 'node:util'
import { Election } from '../election.js'
import { ConclaveError, OptionsError } from '../errors.js'
import { validateCandidate, validateResource } from '../backend.js'
import { BACKEND_SCHEMES, backendFromUrl } from './backends.js'
import { demoWorker, isDemoWorker, runDemo } from './demo.js'
import { parseDuration, runCommand } from './run.js'

const HELP: Record<string, string> = {
  main: `conclave: leader election and singletons for Node.js

Usage:
  conclave demo [--workers N] [--tickets N] [--lease MS]   a live failover demo, no server needed
  conclave status --backend URL NAME...                    who holds each resource now
  conclave watch --backend URL NAME                        one line per change of holders
  conclave run --backend URL --name NAME [...] -- CMD...   run CMD only while holding NAME
  conclave <command> --help

Backend URLs: ${BACKEND_SCHEMES.map((s) => `${s}...`).join(' ')}`,
  demo: `conclave demo [--workers N] [--tickets N] [--lease MS]

Forks N workers (default 4) that elect a leader over node:cluster IPC, SIGKILLs a holder,
closes one gracefully, and shows each failover time and token; then the same with 2 tickets
(or only the --tickets you give). Stops by itself and prints a summary.`,
  status: `conclave status --backend URL NAME...

Prints the holders of each named resource: candidate, token, time left, metadata.`,
  watch: `conclave watch --backend URL NAME

Prints the holders of NAME now and again on every change, until interrupted (Ctrl-C).`,
  run: `conclave run --backend URL --name NAME [options] -- CMD [ARGS...]

Campaigns for NAME and runs CMD only while holding it. CMD gets CONCLAVE_TOKEN (the fencing
token), CONCLAVE_LEADER_ID and CONCLAVE_RESOURCE in its environment. When the term ends, CMD's
process group gets SIGTERM, then SIGKILL after the grace period. SIGINT, SIGTERM, SIGHUP,
SIGQUIT, SIGUSR1 and SIGUSR2 are forwarded to CMD (SIGINT/SIGTERM/SIGHUP/SIGQUIT also stop
conclave run once CMD exits, with SIGKILL after the grace). When CMD exits, the grant is
released and conclave run exits with CMD's code (128 + N if it died by signal N). If conclave
run dies, even by SIGKILL, CMD and its descendants are killed with it.

Options:
  --backend URL    where the lease lives (${BACKEND_SCHEMES.join(' ')})
  --name NAME      the resource, e.g. jobs/nightly
  --tickets N      how many may hold NAME at once (default 1; all must agree)
  --lease D        lease length (default 15s); D is 500ms, 15s, 2m or a number of ms
  --grace D        time between SIGTERM and SIGKILL (default 10s)
  --forever        after a lost term, campaign again and restart CMD
  --id ID          this candidate's id (default host:pid:random)`,
}

class UsageError extends ConclaveError {
  constructor(message: string) {
    super('ERR_CONCLAVE_USAGE', message)
  }
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
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new UsageError(
      `Invalid --${flag}: "${value}". It must be a whole number from ${min} to ${max}.`,
    )
  }
  return n
}

async function main(argv: string[]): Promise<number> {
  if (isDemoWorker()) {
    const i = argv.indexOf('--conclave-demo-worker')
    await demoWorker(argv[i + 1]!, Number(argv[i + 2]), Number(argv[i + 3]))
    return 0
  }
  const [command, ...rest] = argv
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    console.log(HELP.main)
    return command === undefined ? 2 : 0
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
      args: rest,
      allowPositionals: command !== 'demo',
      strict: true,
      options: {
        help: { type: 'boolean', short: 'h' },
        workers: { type: 'string' },
        tickets: { type: 'string' },
        lease: { type: 'string' },
        backend: { type: 'string' },
      },
    })
  } catch (error) {
    throw new UsageError(`${(error as Error).message}. See conclave ${command} --help.`)
  }
  const { values, positionals } = parsed
  if (values.help) {
    console.log(HELP[command])
    return 0
  }
  if (command === 'demo') {
    for (const flag of ['backend'] as const) {
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
      leaseMs: positiveInt('lease', values.lease, 3_000, 100, 60_000),
      phases: tickets === undefined ? [1, 2] : [tickets],
      out: (line) => console.log(line),
    })
    return ok ? 0 : 1
  }
  // status and watch
  if (values.backend === undefined)
    throw new UsageError(`--backend URL is required. See conclave ${command} --help.`)
  for (const flag of ['workers', 'tickets', 'lease'] as const) {
    if (values[flag] !== undefined) throw new UsageError(`--${flag} does not apply to ${command}.`)
  }
  if (positionals.length === 0)
    throw new UsageError(`Name at least one resource. See conclave ${command} --help.`)
  if (command === 'watch' && positionals.length !== 1)
    throw new UsageError('watch takes exactly one resource name.')
  positionals.forEach((name) => validateResource(name, 'NAME'))
  const backend = await backendFromUrl(values.backend, '--backend')
  try {
    if (command === 'status') {
      for (const name of positionals) {
        const holders = await backend.holders(name)
        console.log(
          `${name}: ${holders.length === 0 ? 'no holder' : `${holders.length} holder(s)`}`,
        )
        for (const h of holders) {
          console.log(
            `  ${h.candidate}  token ${h.token}  ${(h.remainingMs / 1000).toFixed(1)}s left${h.metadata === null ? '' : `  ${JSON.stringify(h.metadata)}`}`,
          )
        }
      }
      return 0
    }
    const election = new Election(backend, positionals[0]!)
    election.on('error', (error) => console.error(`error: ${error.message}`))
    const controller = new AbortController()
    process.once('SIGINT', () => controller.abort())
    process.once('SIGTERM', () => controller.abort())
    for await (const holders of election.observe({ signal: controller.signal })) {
      const list = holders.map(
        (h) =>
          `${h.candidate}#${h.token}${h.metadata === null ? '' : ` ${JSON.stringify(h.metadata)}`}`,
      )
      console.log(
        `${new Date().toISOString()}  ${positionals[0]}: ${list.length ? list.join(', ') : 'no holder'}`,
      )
    }
    return 0
  } finally {
    await backend.close()
  }
}

/** A duration flag: `15s`, `500ms`, `2m` or a number of milliseconds, within bounds. */
function duration(
  flag: string,
  value: string | undefined,
  fallback: number,
  min: number,
  max: number,
) {
  if (value === undefined) return fallback
  const ms = parseDuration(value)
  if (ms === undefined || ms < min || ms > max) {
    throw new UsageError(
      `Invalid --${flag}: "${value}". It must be a duration such as 500ms, 15s or 2m (a bare number is milliseconds), from ${min} ms to ${max} ms.`,
    )
  }
  return ms
}

async function run(args: string[]): Promise<number> {
  const split = args.indexOf('--')
  const flags = split === -1 ? args : args.slice(0, split)
  let values
  try {
    ;({ values } = parseArgs({
      args: flags,
      allowPositionals: false,
      strict: true,
      options: {
        help: { type: 'boolean', short: 'h' },
        backend: { type: 'string' },
        name: { type: 'string' },
        tickets: { type: 'string' },
        lease: { type: 'string' },
        grace: { type: 'string' },
        forever: { type: 'boolean' },
        id: { type: 'string' },
      },
    }))
  } catch (error) {
    const hint =
      split === -1 ? ' Put -- before the command: conclave run [options] -- CMD ARGS...' : ''
    throw new UsageError(`${(error as Error).message}.${hint} See conclave run --help.`)
  }
  if (values.help) {
    console.log(HELP.run)
    return 0
  }
  if (values.backend === undefined)
    throw new UsageError('--backend URL is required. See conclave run --help.')
  if (values.name === undefined)
    throw new UsageError('--name NAME is required. See conclave run --help.')
  const command = split === -1 ? [] : args.slice(split + 1)
  if (command.length === 0 || command[0] === '')
    throw new UsageError('Give the command to run after --: conclave run [options] -- CMD ARGS...')
  const name = validateResource(values.name, '--name')
  const tickets = positiveInt('tickets', values.tickets, 1, 1, 10_000)
  const leaseMs = duration('lease', values.lease, 15_000, 100, 86_400_000)
  const graceMs = duration('grace', values.grace, 10_000, 0, 3_600_000)
  const code = await runCommand({
    backend: values.backend,
    name,
    tickets,
    leaseMs,
    graceMs,
    forever: values.forever ?? false,
    id: values.id === undefined ? undefined : validateCandidate(values.id, '--id'),
    command,
    log: (line) => console.error(`conclave run: ${line}`),
  })
  // Nothing may keep this process around once the command is over and the grant released.
  process.exit(code)
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (error: unknown) => {
    if (error instanceof UsageError || error instanceof OptionsError) {
      console.error(`conclave: ${error.message}`)
      process.exitCode = 2
    } else {
      console.error(
        `conclave: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`,
      )
      process.exitCode = 1
    }
  },
)
