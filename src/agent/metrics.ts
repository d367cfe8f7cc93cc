/**
 * Prometheus metrics of every worker, merged, from any process: each worker shares its
 * prom-client registries (`shareMetrics`), `clusterMetrics` gathers them with a per-worker
 * timeout and merges them by prom-client's rules (each metric's `aggregator`: sum (default),
 * first, min, max, average, omit). A worker that does not answer is left out and counted in
 * the gauge `conclave_agent_workers_missing` (and named in a comment line), so one slow worker
 * never fails the scrape.
 *
 * prom-client stays optional: registries are duck-typed (`getMetricsAsJSON()`), and the text is
 * rendered here (identical to prom-client's for the Prometheus format); only the OpenMetrics
 * format is delegated to prom-client, loaded when needed.
 */
import { OptionsError } from '../errors.js'
import type { GatherEntry, ProcessAgent } from './agent.js'
import type { CallOptions } from './options.js'
import { getAgent } from './default.js'

/** The handler name each worker answers metrics requests under (`shareMetrics`). */
export const METRICS_HANDLER = 'conclave/metrics'
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'
const OPENMETRICS_CONTENT_TYPE = 'application/openmetrics-text; version=1.0.0; charset=utf-8'

/** What conclave needs of a prom-client Registry. */
export interface RegistryLike {
  /** prom-client's `MetricObjectWithValues[]`, read as `MetricJson[]`. */
  getMetricsAsJSON(): Promise<object[]> | object[]
  readonly contentType?: string
}

/** One sample of a metric, as prom-client's `getMetricsAsJSON()` gives it. */
export interface MetricValue {
  value: number
  labels: Record<string, string | number>
  metricName?: string
}

/** One metric, as prom-client's `getMetricsAsJSON()` gives it. */
export interface MetricJson {
  name: string
  help: string
  type: string
  aggregator?: string
  values: MetricValue[]
}

export interface ClusterMetricsOptions extends CallOptions {
  agent?: ProcessAgent
}

function isRegistry(value: unknown): value is RegistryLike {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as RegistryLike).getMetricsAsJSON === 'function'
  )
}

/**
 * Makes this worker answer `clusterMetrics` with these registries (a prom-client Registry or
 * several; e.g. `register` from prom-client). Call it once in every worker.
 */
export function shareMetrics(
  registries: RegistryLike | RegistryLike[],
  options: { agent?: ProcessAgent } = {},
): void {
  const list = Array.isArray(registries) ? registries : [registries]
  if (list.length === 0 || !list.every(isRegistry)) {
    throw new OptionsError(
      'registries',
      registries,
      'shareMetrics() takes a prom-client Registry (anything with getMetricsAsJSON()) or an array of them.',
    )
  }
  const agent = options.agent ?? getAgent()
  agent.register(
    METRICS_HANDLER,
    async () => {
      const metrics = (await Promise.all(list.map(async (r) => r.getMetricsAsJSON()))).flat()
      return encodeMetrics(metrics as MetricJson[])
    },
    { replace: true },
  )
}

/**
 * A metric as it travels: `[name, help, type, aggregator, flat]`, where `flat` holds three
 * slots per value: the value (a string when not finite, which JSON would make null), the labels,
 * and the metric name as a suffix of `name` (`'_bucket'`), `null` when absent, or `{ n: name }`.
 * About half the bytes of prom-client's objects, so less to serialise, carry and parse.
 */
export type WireMetric = [string, string, string, string | null, unknown[]]

export function encodeMetrics(metrics: MetricJson[]): WireMetric[] {
  const out: WireMetric[] = []
  for (const metric of metrics) {
    const flat: unknown[] = []
    for (const v of metric.values ?? []) {
      const m = v.metricName
      flat.push(
        Number.isFinite(v.value) ? v.value : String(v.value),
        v.labels ?? {},
        m === undefined ? null : m.startsWith(metric.name) ? m.slice(metric.name.length) : { n: m },
      )
    }
    out.push([metric.name, metric.help, metric.type, metric.aggregator ?? null, flat])
  }
  return out
}

/** Reads what `encodeMetrics` sent; throws on anything that is not metrics. */
export function decodeMetrics(data: unknown): MetricJson[] {
  if (!Array.isArray(data)) throw new Error('metrics are not an array')
  const out: MetricJson[] = []
  for (const wire of data as unknown[]) {
    if (!Array.isArray(wire) || typeof wire[0] !== 'string' || !Array.isArray(wire[4])) {
      throw new Error('a metric is not [name, help, type, aggregator, values]')
    }
    const [name, help, type, aggregator, flat] = wire as WireMetric
    const values: MetricValue[] = []
    for (let i = 0; i + 2 < flat.length; i += 3) {
      const raw = flat[i]
      const m = flat[i + 2] as string | { n: string } | null
      const value: MetricValue = {
        value: typeof raw === 'number' ? raw : Number(raw),
        labels: (flat[i + 1] ?? {}) as MetricValue['labels'],
      }
      if (m !== null) value.metricName = typeof m === 'string' ? name + m : m.n
      values.push(value)
    }
    out.push({
      name,
      help: String(help),
      type: String(type),
      ...(aggregator !== null ? { aggregator } : {}),
      values,
    })
  }
  return out
}

/** The merged metrics of every worker, and which workers answered. */
export interface ClusterMetricsResult {
  text: string
  contentType: string
  /** One entry per worker asked; `ok: false` ones are left out of `text`. */
  workers: GatherEntry<unknown>[]
  missing: { workerId: number; pid: number; error: Error }[]
}

/**
 * The merged Prometheus text of every worker's shared registries. `registry` is this process's
 * registry: in a worker that has not shared one yet it is shared now, and its `contentType`
 * chooses the format (Prometheus unless it is OpenMetrics). Pass `null` in a primary that has
 * no registry of its own.
 */
export async function clusterMetrics(
  registry: RegistryLike | null | undefined,
  options: ClusterMetricsOptions = {},
): Promise<string> {
  return (await collectClusterMetrics(registry, options)).text
}

/** Like `clusterMetrics`, with each worker's outcome and the missing ones listed. */
export async function collectClusterMetrics(
  registry: RegistryLike | null | undefined,
  options: ClusterMetricsOptions = {},
): Promise<ClusterMetricsResult> {
  if (registry != null && !isRegistry(registry)) {
    throw new OptionsError(
      'registry',
      registry,
      'clusterMetrics() takes a prom-client Registry (anything with getMetricsAsJSON()) or null.',
    )
  }
  const { agent: given, ...callOptions } = options
  const agent = given ?? getAgent()
  if (registry && agent.role === 'worker' && !agent.has(METRICS_HANDLER)) {
    shareMetrics(registry, { agent })
  }
  const entries = await agent.gather<unknown>(METRICS_HANDLER, [], callOptions)
  const parts: MetricJson[][] = []
  const missing: ClusterMetricsResult['missing'] = []
  for (const entry of entries) {
    if (!entry.ok) {
      missing.push({ workerId: entry.workerId, pid: entry.pid, error: entry.error })
      continue
    }
    try {
      parts.push(decodeMetrics(entry.value))
    } catch (error) {
      missing.push({
        workerId: entry.workerId,
        pid: entry.pid,
        error: new Error(`unreadable metrics: ${(error as Error).message}`),
      })
    }
  }
  const openMetrics = registry?.contentType === OPENMETRICS_CONTENT_TYPE
  const notes: string[] = []
  let text: string
  if (openMetrics) {
    text = await renderWithPromClient(parts, OPENMETRICS_CONTENT_TYPE)
  } else {
    text = renderPrometheus(aggregate(parts, notes))
  }
  text = appendMissing(text, missing, entries.length, notes, openMetrics)
  return {
    text,
    contentType: openMetrics ? OPENMETRICS_CONTENT_TYPE : PROMETHEUS_CONTENT_TYPE,
    workers: entries,
    missing,
  }
}

function appendMissing(
  text: string,
  missing: ClusterMetricsResult['missing'],
  asked: number,
  notes: string[],
  openMetrics: boolean,
): string {
  const gauge = [
    '# HELP conclave_agent_workers_missing Workers whose metrics are not in this scrape (no answer in time, failed or exited).',
    '# TYPE conclave_agent_workers_missing gauge',
    `conclave_agent_workers_missing ${missing.length}`,
    '# HELP conclave_agent_workers_asked Workers asked for their metrics in this scrape.',
    '# TYPE conclave_agent_workers_asked gauge',
    `conclave_agent_workers_asked ${asked}`,
  ]
  if (openMetrics) {
    // OpenMetrics has no free comments and ends with # EOF.
    return `${text.replace(/# EOF\n?$/, '')}${gauge.join('\n')}\n# EOF\n`
  }
  const comments = [
    ...missing.map(
      (m) =>
        `# conclave: worker ${m.workerId} (pid ${m.pid}) left out: ${m.error.message.replace(/\n/g, ' ')}`,
    ),
    ...notes.map((n) => `# conclave: ${n}`),
  ]
  const head = text === '\n' ? '' : `${text}\n`
  return `${head}${[...comments, ...gauge].join('\n')}\n`
}

/** How each aggregator folds one more value in (same order and arithmetic as prom-client). */
const AGGREGATORS: Record<string, 'sum' | 'first' | 'min' | 'max' | 'average' | null> = {
  sum: 'sum',
  first: 'first',
  min: 'min',
  max: 'max',
  average: 'average',
  omit: null,
}

interface Merged {
  name: string
  help: string
  type: string
  values: { metricName?: string; labels: Record<string, string | number>; value: number }[]
}

interface Series {
  metricName: string | undefined
  labels: Record<string, string | number>
  acc: number
  n: number
}

function labelKey(metricName: string | undefined, labels: Record<string, unknown>): string {
  let keys = Object.keys(labels)
  for (let i = 1; i < keys.length; i++) {
    if (keys[i - 1]! > keys[i]!) {
      keys = keys.sort()
      break
    }
  }
  let key = metricName ?? ''
  for (const k of keys) key += `\u0001${k}\u0002${String(labels[k])}`
  return key
}

/** Merges per-worker metrics by name, then by metric name and labels, like prom-client. */
export function aggregate(parts: MetricJson[][], notes: string[] = []): Merged[] {
  const byName = new Map<string, MetricJson[]>()
  for (const metrics of parts) {
    for (const metric of metrics) {
      const list = byName.get(metric.name)
      if (list) list.push(metric)
      else byName.set(metric.name, [metric])
    }
  }
  const out: Merged[] = []
  for (const [name, metrics] of byName) {
    const first = metrics[0]!
    const aggregatorName = first.aggregator ?? 'sum'
    const kind = AGGREGATORS[aggregatorName]
    if (kind === undefined) {
      notes.push(`metric ${name} has an unknown aggregator "${aggregatorName}"; left out`)
      continue
    }
    if (kind === null) continue
    const start = kind === 'min' ? Infinity : kind === 'max' ? -Infinity : 0
    const series = new Map<string, Series>()
    for (const metric of metrics) {
      for (const v of metric.values ?? []) {
        const labels = v.labels ?? {}
        const key = labelKey(v.metricName, labels)
        let s = series.get(key)
        if (!s) series.set(key, (s = { metricName: v.metricName, labels, acc: start, n: 0 }))
        const x = v.value
        if (kind === 'sum' || kind === 'average') s.acc = s.acc + x
        else if (kind === 'min') s.acc = Math.min(s.acc, x)
        else if (kind === 'max') s.acc = Math.max(s.acc, x)
        else if (s.n === 0) s.acc = x
        s.n++
      }
    }
    const values: Merged['values'] = []
    for (const s of series.values()) {
      const value = kind === 'average' ? s.acc / s.n : s.acc
      values.push(
        s.metricName
          ? { metricName: s.metricName, labels: s.labels, value }
          : { labels: s.labels, value },
      )
    }
    out.push({ name, help: first.help, type: first.type, values })
  }
  return out
}

const escapeString = (s: string) => s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')
const escapeLabel = (v: unknown) =>
  typeof v === 'string' ? escapeString(v).replace(/"/g, '\\"') : String(v)

function valueText(value: number): string {
  if (Number.isNaN(value)) return 'Nan'
  if (!Number.isFinite(value)) return value < 0 ? '-Inf' : '+Inf'
  return `${value}`
}

/** The Prometheus text exposition of merged metrics, byte for byte as prom-client writes it. */
export function renderPrometheus(metrics: Merged[]): string {
  const blocks: string[] = []
  for (const metric of metrics) {
    const name = escapeString(metric.name)
    let block = `# HELP ${name} ${escapeString(metric.help)}\n# TYPE ${name} ${metric.type}`
    for (const v of metric.values) {
      let labels = ''
      for (const k in v.labels) {
        labels += `${labels ? ',' : ''}${k}="${escapeLabel(v.labels[k])}"`
      }
      block += `\n${v.metricName ?? name}${labels ? `{${labels}}` : ''} ${valueText(v.value)}`
    }
    blocks.push(block)
  }
  return `${blocks.join('\n\n')}\n`
}

interface PromClientModule {
  AggregatorRegistry: {
    aggregate(metrics: MetricJson[][], contentType?: string): { metrics(): Promise<string> }
  }
}

async function renderWithPromClient(parts: MetricJson[][], contentType: string): Promise<string> {
  let prom: PromClientModule
  try {
    const name = 'prom-client'
    const loaded = (await import(name)) as PromClientModule & { default?: PromClientModule }
    prom = loaded.AggregatorRegistry ? loaded : loaded.default!
  } catch (error) {
    throw new OptionsError(
      'registry',
      contentType,
      'The OpenMetrics format is rendered by prom-client, which could not be loaded.',
      `Install prom-client (${(error as Error).message}).`,
    )
  }
  return prom.AggregatorRegistry.aggregate(parts, contentType).metrics()
}
