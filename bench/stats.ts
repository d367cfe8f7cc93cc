/** Small statistics for benchmark samples, and the row shape the tables and latest.json share. */

/** The p-th percentile (nearest rank) of `samples`; NaN when there are none. */
export function percentile(samples: number[], p: number): number {
  if (samples.length === 0) return NaN
  const sorted = [...samples].sort((a, b) => a - b)
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[rank]!
}

/** The median (50th percentile, nearest rank) of `samples`. */
export function median(samples: number[]): number {
  return percentile(samples, 50)
}

/** One figure a scenario measured on one subject, before the runner says which. */
export interface Measurement {
  /** What is measured within the scenario, e.g. "acquire". Rows with the same metric are compared. */
  metric: string
  /** Set by the scenario: every subject's row of a metric has the same unit. */
  unit: string
  p50?: number
  p99?: number
  /** A single figure (a rate) when p50/p99 do not apply. */
  value?: number
  samples: number
  note?: string
  /** Set when the subject cannot give this figure: why (the table shows "n/a"). */
  na?: string
}

/** A measurement placed in a suite's table. */
export interface BenchRow extends Measurement {
  /** The scenario's title, e.g. "crash failover". */
  scenario: string
  /** Who is measured, e.g. "conclave/redis", "redis-semaphore Mutex". */
  subject: string
}

/** Median and p99 of `samples` as one measurement. */
export function summarize(
  metric: string,
  samples: number[],
  unit = 'ms',
  note?: string,
): Measurement {
  return {
    metric,
    unit,
    p50: median(samples),
    p99: percentile(samples, 99),
    samples: samples.length,
    ...(note ? { note } : {}),
  }
}

/** A single figure (a rate, a count) as one measurement. */
export function single(
  metric: string,
  value: number,
  unit: string,
  samples: number,
  note?: string,
): Measurement {
  return { metric, unit, value, samples, ...(note ? { note } : {}) }
}

/** A figure the subject cannot give, with the reason. */
export function notAvailable(metric: string, unit: string, reason: string): Measurement {
  return { metric, unit, samples: 0, na: reason }
}
