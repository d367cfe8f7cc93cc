/**
 * Prometheus metrics through prom-client (an optional peer dependency, loaded only when
 * `electionMetrics()` is called), registered on the user's registry. Per resource:
 *
 * | metric                                 | type      | labels           |
 * | -------------------------------------- | --------- | ---------------- |
 * | `conclave_is_leader`                   | gauge     | resource         |
 * | `conclave_term_remaining_seconds`      | gauge     | resource         |
 * | `conclave_terms_started_total`         | counter   | resource         |
 * | `conclave_terms_ended_total`           | counter   | resource, reason |
 * | `conclave_backend_errors_total`        | counter   | resource         |
 * | `conclave_work_errors_total`           | counter   | resource         |
 * | `conclave_renew_duration_seconds`      | histogram | resource         |
 *
 * An `error` event is the work's own (a WorkError, `code` ERR_CONCLAVE_WORK: a `run()` or
 * `every()` callback that threw) or the backend's (everything else, retried by the core); each
 * has its counter, so a failing job never looks like a failing backend.
 *
 * Gauges are read at scrape time. Renew latency is measured by wrapping the backend
 * (`metrics.instrument(backend)`), since the election core exposes no per-renewal hook.
 */
import { createRequire } from 'node:module'
import type { Backend, RenewRequest } from './backend.js'
import type { Election } from './election.js'
import { MissingPeerError, OptionsError, WorkError } from './errors.js'
import { onElectionError } from './health.js'

import type { Counter, Histogram, Registry } from 'prom-client'
import { checkOptions } from './validate.js'
import { forwardingBackend } from './backends/kit.js'

type PromClient = typeof import('prom-client')

/** What conclave needs of a prom-client Registry (kept structural: no prom-client types here). */
export interface MetricsRegistry {
  /** Registers a metric (prom-client's `Registry.registerMetric`). */
  registerMetric(metric: never): void
  /** The metric registered under `name`, if any. */
  getSingleMetric(name: string): unknown
}

/** Options of `electionMetrics()`. */
export interface ElectionMetricsOptions {
  /** Your prom-client Registry (e.g. `register` from prom-client, or `new Registry()`). */
  registry: MetricsRegistry
  /** Prepended to every metric name. Default `conclave_`. */
  prefix?: string
  /** Histogram buckets of the renew latency, in seconds. */
  buckets?: number[]
  /** The prom-client module to build metrics with. Default: `prom-client`, as resolved from conclave. */
  client?: unknown
}

const DEFAULT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]
const REASONS = ['resigned', 'expired', 'lost', 'closed'] as const
const PREFIX = /^[a-zA-Z_:][a-zA-Z0-9_:]*$|^$/

function loadPromClient(): PromClient {
  try {
    return createRequire(import.meta.url)('prom-client') as PromClient
  } catch (error) {
    throw new MissingPeerError('prom-client', 'electionMetrics()', {
      cause: error,
      message:
        'electionMetrics() needs the prom-client package: npm install prom-client (or pass { client }).',
    })
  }
}

/**
 * Prometheus metrics of elections (see `electionMetrics()`): `track()` elections, `instrument()` backends.
 */
export class ElectionMetrics {
  readonly #tracked = new Map<Election, () => void>()
  readonly #started: Counter<'resource'>
  readonly #ended: Counter<'resource' | 'reason'>
  readonly #errors: Counter<'resource'>
  readonly #workErrors: Counter<'resource'>
  readonly #renewDuration: Histogram<'resource'>

  /** @internal Use electionMetrics(). */
  constructor(options: ElectionMetricsOptions) {
    if (typeof options !== 'object' || options === null)
      throw new OptionsError('options', options, 'electionMetrics() takes { registry }.')
    checkOptions(options, ['registry', 'prefix', 'buckets', 'client'], 'metrics')
    const { registry } = options
    if (
      typeof registry?.registerMetric !== 'function' ||
      typeof registry.getSingleMetric !== 'function'
    ) {
      throw new OptionsError(
        'registry',
        registry,
        'Pass your prom-client Registry, e.g. { registry: register } or { registry: new Registry() }.',
      )
    }
    const prefix = options.prefix ?? 'conclave_'
    if (typeof prefix !== 'string' || !PREFIX.test(prefix))
      throw new OptionsError(
        'prefix',
        prefix,
        'prefix must be a Prometheus metric name start: letters, digits, _ and :, not starting with a digit.',
      )
    const buckets = options.buckets ?? DEFAULT_BUCKETS
    if (
      !Array.isArray(buckets) ||
      buckets.length === 0 ||
      buckets.some((b, i) => !Number.isFinite(b) || b <= 0 || (i > 0 && b <= buckets[i - 1]!))
    ) {
      throw new OptionsError(
        'buckets',
        buckets,
        'buckets must be a non-empty list of increasing positive numbers (seconds).',
      )
    }
    const client = (options.client ?? loadPromClient()) as PromClient
    if (typeof client?.Gauge !== 'function' || typeof client.Histogram !== 'function')
      throw new OptionsError('client', options.client, 'client must be the prom-client module.')
    for (const name of [
      'is_leader',
      'term_remaining_seconds',
      'terms_started_total',
      'terms_ended_total',
      'backend_errors_total',
      'work_errors_total',
      'renew_duration_seconds',
    ]) {
      if (registry.getSingleMetric(prefix + name) !== undefined) {
        throw new OptionsError(
          'registry',
          `${prefix}${name}`,
          'That metric is already registered: make one electionMetrics() per registry and track every election with it (or use another prefix).',
        )
      }
    }
    const registers = [registry] as unknown as Registry[]
    const tracked = this.#tracked
    // The gauges are read at scrape time; the registry holds them.
    new client.Gauge({
      name: `${prefix}is_leader`,
      help: '1 while this process holds a term on the resource, else 0.',
      labelNames: ['resource'],
      registers,
      collect() {
        this.reset()
        const values = new Map<string, number>()
        for (const election of tracked.keys()) {
          // Reading isLeader reads the clock: an overdue term shows as 0 (and ends).
          const value = election.isLeader ? 1 : 0
          values.set(election.resource, Math.max(values.get(election.resource) ?? 0, value))
        }
        for (const [resource, value] of values) this.set({ resource }, value)
      },
    })
    new client.Gauge({
      name: `${prefix}term_remaining_seconds`,
      help: "Seconds until the current term's deadline (0 when not leading).",
      labelNames: ['resource'],
      registers,
      collect() {
        this.reset()
        const values = new Map<string, number>()
        for (const election of tracked.keys()) {
          const ms = election.term?.remainingMs ?? 0
          values.set(election.resource, Math.max(values.get(election.resource) ?? 0, ms / 1000))
        }
        for (const [resource, seconds] of values) this.set({ resource }, seconds)
      },
    })
    this.#started = new client.Counter({
      name: `${prefix}terms_started_total`,
      help: 'Terms this process won.',
      labelNames: ['resource'],
      registers,
    })
    this.#ended = new client.Counter({
      name: `${prefix}terms_ended_total`,
      help: 'Terms this process ended, by reason: resigned, expired, lost, closed.',
      labelNames: ['resource', 'reason'],
      registers,
    })
    this.#errors = new client.Counter({
      name: `${prefix}backend_errors_total`,
      help: 'Backend errors reported by the election (each retried).',
      labelNames: ['resource'],
      registers,
    })
    this.#workErrors = new client.Counter({
      name: `${prefix}work_errors_total`,
      help: "Errors thrown by the leader's own work (run() and every() callbacks), reported as WorkError.",
      labelNames: ['resource'],
      registers,
    })
    this.#renewDuration = new client.Histogram({
      name: `${prefix}renew_duration_seconds`,
      help: 'Round trip of successful renew calls through an instrumented backend, per resource renewed.',
      labelNames: ['resource'],
      buckets,
      registers,
    })
  }

  /** Counts the election's terms and errors and reports its gauges. Returns a function to stop. */
  track(election: Election): () => void {
    if (this.#tracked.has(election)) return () => this.#untrack(election)
    const resource = election.resource
    // Zero-valued series from the start, so rate() and absent() work before the first event.
    this.#started.inc({ resource }, 0)
    for (const reason of REASONS) this.#ended.inc({ resource, reason }, 0)
    this.#errors.inc({ resource }, 0)
    this.#workErrors.inc({ resource }, 0)
    const onElected = () => this.#started.inc({ resource })
    const onRevoked = (_term: unknown, reason: string) => this.#ended.inc({ resource, reason })
    const offError = onElectionError(election, (error) =>
      (isWorkError(error) ? this.#workErrors : this.#errors).inc({ resource }),
    )
    election.on('elected', onElected)
    election.on('revoked', onRevoked)
    this.#tracked.set(election, () => {
      election.off('elected', onElected)
      election.off('revoked', onRevoked)
      offError()
    })
    return () => this.#untrack(election)
  }

  /**
   * A backend that behaves exactly like `backend` and times each `renew` call. Build your
   * elections on it (one wrapper per backend, shared, so renewals stay batched).
   */
  instrument(backend: Backend): Backend {
    const histogram = this.#renewDuration
    return forwardingBackend(backend, {
      async renew(requests: RenewRequest[]) {
        const started = performance.now()
        const results = await backend.renew(requests)
        const seconds = (performance.now() - started) / 1000
        for (const resource of new Set(requests.map((r) => r.resource))) {
          histogram.observe({ resource }, seconds)
        }
        return results
      },
    })
  }

  /** Stops tracking every election (the metrics stay registered). */
  close(): void {
    for (const election of [...this.#tracked.keys()]) this.#untrack(election)
  }

  #untrack(election: Election): void {
    this.#tracked.get(election)?.()
    this.#tracked.delete(election)
  }
}

/** True for the work's own error (a WorkError, also from another copy of conclave: by code). */
function isWorkError(error: unknown): boolean {
  return (
    error instanceof WorkError || (error as { code?: unknown } | null)?.code === 'ERR_CONCLAVE_WORK'
  )
}

/** Creates conclave's metrics on `registry`; then `track(election)` each election. */
export function electionMetrics(options: ElectionMetricsOptions): ElectionMetrics {
  return new ElectionMetrics(options)
}
