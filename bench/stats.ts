/** Small statistics for benchmark samples (milliseconds unless a row says otherwise). */
export function percentile(samples: number[], p: number): number {
  if (samples.length === 0) return NaN
  const sorted = [...samples].sort((a, b) => a - b)
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[rank]!
}

export function median(samples: number[]): number {
  return percentile(samples, 50)
}

/** One measured line of a benchmark table. */
export interface BenchRow {
  /** What is measured, e.g. "uncontended acquire". Rows with the same metric are compared. */
  metric: string
  /** Who is measured, e.g. "conclave/redis", "redis-semaphore Mutex". */
  subject: string
  unit: string
  p50?: number
  p99?: number
  /** A single figure (a rate, a multiple of the lease) when p50/p99 do not apply. */
  value?: number
  samples: number
  note?: string
}

export function summarize(
  metric: string,
  subject: string,
  samples: number[],
  unit = 'ms',
  note?: string,
): BenchRow {
  return {
    metric,
    subject,
    unit,
    p50: median(samples),
    p99: percentile(samples, 99),
    samples: samples.length,
    ...(note ? { note } : {}),
  }
}

/** A benchmark suite: one file under bench/suites/ exporting it as default. */
export interface BenchSuite {
  name: string
  /** Short runs for smoke checks when `quick` is set. */
  run(options: { quick: boolean; log: (line: string) => void }): Promise<BenchRow[]>
}
