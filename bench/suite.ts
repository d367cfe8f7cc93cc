/**
 * A suite is a list of subjects × scenarios: it starts the servers its subjects need, and the
 * runner runs every scenario on every subject, one subject at a time (so no subject's traffic
 * or CPU lands in another's figures).
 */
import { fork } from 'node:child_process'
import type { Named, Scenario, ScenarioOptions } from './scenarios.js'
import { runScenarios } from './scenarios.js'
import { type BenchRow, notAvailable } from './stats.js'

/** A subject the runner opens in its own process, measures, and closes. */
export interface LocalSubject<S extends Named> {
  readonly name: string
  open(): S | Promise<S>
}

/** Subjects that live in a process tree of their own (a cluster app): measured there. */
export interface HostedSubjects {
  readonly names: readonly string[]
  /** Runs the scenarios (by id) on every subject, there; resolves with their rows. */
  run(scenarioIds: string[], options: ScenarioOptions): Promise<BenchRow[]>
}

/** What a suite's setup gives the runner. */
export interface SuiteSetup<S extends Named> {
  /** In table order. */
  subjects: (LocalSubject<S> | HostedSubjects)[]
  /** Stops the servers. */
  teardown: () => Promise<void>
}

/** One file under bench/suites/ exports one of these as default. */
export interface Suite<S extends Named = Named> {
  /** Used by --only and as the table's heading. */
  readonly name: string
  readonly scenarios: readonly Scenario<S>[]
  /** Table order of the subjects when not the order of `setup`'s list (hosted groups). */
  readonly order?: readonly string[]
  setup(options: ScenarioOptions): Promise<SuiteSetup<S>>
}

/** Types a suite (its subjects and scenarios agree on the subject type). */
export function defineSuite<S extends Named>(suite: Suite<S>): Suite<S> {
  return suite
}

/** Runs every scenario of `suite` on every subject; the rows in table order. */
export async function runSuite<S extends Named>(
  suite: Suite<S>,
  options: ScenarioOptions,
): Promise<BenchRow[]> {
  const { subjects, teardown } = await suite.setup(options)
  const rows: BenchRow[] = []
  try {
    for (const entry of subjects) {
      if ('names' in entry) {
        try {
          rows.push(
            ...(await entry.run(
              suite.scenarios.map((s) => s.id),
              options,
            )),
          )
        } catch (error) {
          const reason = `failed: ${(error as Error).message}`
          for (const name of entry.names)
            for (const s of suite.scenarios)
              rows.push({ scenario: s.title, subject: name, ...notAvailable('', '', reason) })
        }
        continue
      }
      let subject: S
      try {
        subject = await entry.open()
      } catch (error) {
        const reason = `could not start: ${(error as Error).message}`
        for (const s of suite.scenarios)
          rows.push({ scenario: s.title, subject: entry.name, ...notAvailable('', '', reason) })
        continue
      }
      try {
        rows.push(...(await runScenarios(subject, suite.scenarios, options)))
      } finally {
        await subject.close?.()
      }
    }
  } finally {
    await teardown()
  }
  const order = suite.scenarios.map((s) => s.title)
  const names = suite.order ?? subjects.flatMap((e) => ('names' in e ? e.names : [e.name]))
  const metricOrder = new Map<string, number>()
  for (const r of rows) {
    const key = `${r.scenario}\n${r.metric}\n${r.unit}`
    if (!metricOrder.has(key)) metricOrder.set(key, metricOrder.size)
  }
  const rank = (r: BenchRow) => [
    order.indexOf(r.scenario),
    // A scenario-wide n/a row goes after that scenario's figures.
    r.metric ? metricOrder.get(`${r.scenario}\n${r.metric}\n${r.unit}`)! : Infinity,
    names.indexOf(r.subject),
  ]
  return rows.sort((a, b) => {
    const [x, y] = [rank(a), rank(b)]
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i]! - y[i]!
    return 0
  })
}

// ---- hosted subjects: a child process runs the scenarios and sends its rows back ---------------

const PLAN_ENV = 'CONCLAVE_BENCH_PLAN'

/** What a host process is asked to run. */
export interface HostPlan {
  /** Subjects by name. */
  subjects: string[]
  /** Scenarios by id. */
  scenarios: string[]
  quick: boolean
}

/** Messages a host sends up. */
type HostMessage = { benchLog: string } | { benchRows: BenchRow[] }

/**
 * Subjects hosted by `program` (started with `node --import tsx`, the plan in its environment),
 * which answers with hostReply(); its logs are forwarded.
 */
export function hosted(program: string, names: string[]): HostedSubjects {
  return {
    names,
    run(scenarios, options) {
      const plan: HostPlan = { subjects: names, scenarios, quick: options.quick }
      const child = fork(program, [], {
        execArgv: ['--import', 'tsx'],
        env: { ...process.env, [PLAN_ENV]: JSON.stringify(plan) },
      })
      return new Promise((resolve, reject) => {
        let rows: BenchRow[] | undefined
        child.on('message', (m: HostMessage) => {
          if ('benchLog' in m) options.log(m.benchLog)
          if ('benchRows' in m) rows = m.benchRows
        })
        child.once('error', reject)
        child.once('exit', (code, signal) =>
          rows ? resolve(rows) : reject(new Error(`${program} exited (${code ?? signal})`)),
        )
      })
    },
  }
}

/** In a host process: the plan it was started with (undefined when it was not started as one). */
export function hostPlan(): HostPlan | undefined {
  const text = process.env[PLAN_ENV]
  return text ? (JSON.parse(text) as HostPlan) : undefined
}

/** In a host process: scenario options whose log goes to the runner. */
export function hostOptions(plan: HostPlan): ScenarioOptions {
  return { quick: plan.quick, log: (line) => process.send?.({ benchLog: line }) }
}

/** In a host process: sends the rows to the runner. */
export function hostReply(rows: BenchRow[]): Promise<void> {
  return new Promise((resolve) => process.send!({ benchRows: rows }, () => resolve()))
}

/** Whether `m` is a host's message (a cluster primary relays its worker's to the runner). */
export function isHostMessage(m: unknown): boolean {
  return typeof m === 'object' && m !== null && ('benchLog' in m || 'benchRows' in m)
}
