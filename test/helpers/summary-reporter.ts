// Ends the run with the plain line "Tests: N passed, N failed" that CI reads.
import type { Reporter, RunnerTask, RunnerTestFile } from 'vitest/node'

function count(tasks: RunnerTask[], totals: { passed: number; failed: number }): void {
  for (const task of tasks) {
    if (task.type === 'test') {
      if (task.result?.state === 'pass') totals.passed++
      else if (task.result?.state === 'fail') totals.failed++
    } else {
      // A failing hook fails its suite without failing a test: count it.
      if (task.result?.state === 'fail' && task.tasks.every((t) => t.result?.state !== 'fail'))
        totals.failed++
      count(task.tasks, totals)
    }
  }
}

export default class SummaryReporter implements Reporter {
  onFinished(files: RunnerTestFile[] = [], errors: unknown[] = []): void {
    const totals = { passed: 0, failed: 0 }
    count(files, totals)
    totals.failed += errors.length
    process.stdout.write(`\nTests: ${totals.passed} passed, ${totals.failed} failed\n`)
  }
}
