// Metrics through a real prom-client Registry, on the memory backend with a real clock.
import { Registry } from 'prom-client'
import { describe, expect, it } from 'vitest'
import { memoryBackend } from '../../src/backends/memory.js'
import { Election } from '../../src/election.js'
import type { Backend } from '../../src/backend.js'
import { BackendError, OptionsError, WorkError } from '../../src/errors.js'
import { electionMetrics } from '../../src/metrics.js'
import { every } from '../../src/singleton.js'

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

async function value(
  registry: Registry,
  name: string,
  labels: Record<string, string>,
): Promise<number | undefined> {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name)
  const match = (metric?.values ?? []).find((v) =>
    Object.entries(labels).every(([k, l]) => (v.labels as Record<string, unknown>)[k] === l),
  )
  return match?.value
}

async function until(check: () => Promise<boolean>, timeoutMs: number, what: string) {
  const end = performance.now() + timeoutMs
  while (!(await check())) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(10)
  }
}

describe('electionMetrics', () => {
  it('counts terms by end reason, reports is_leader, time to deadline, renew latency and errors', async () => {
    const registry = new Registry()
    const metrics = electionMetrics({ registry })
    const store = memoryBackend()
    const handle = store.handle()
    const backend = metrics.instrument(handle)
    const election = new Election(backend, 'jobs/metrics', { leaseMs: 300 })
    election.on('error', () => {})
    metrics.track(election)
    const resource = { resource: 'jobs/metrics' }
    const v = (name: string, labels: Record<string, string> = resource) =>
      value(registry, `conclave_${name}`, labels)
    const ended = (reason: string) => v('terms_ended_total', { ...resource, reason })

    expect(await v('is_leader')).toBe(0)
    expect(await v('terms_started_total')).toBe(0)
    expect(await ended('expired')).toBe(0)

    // 1: resigned
    let term = await election.campaign()
    expect(await v('is_leader')).toBe(1)
    expect(await v('terms_started_total')).toBe(1)
    const remaining = (await v('term_remaining_seconds'))!
    expect(remaining).toBeGreaterThan(0)
    expect(remaining).toBeLessThanOrEqual(0.3)
    const renewCount = async () =>
      (await registry.getMetricsAsJSON())
        .find((m) => m.name === 'conclave_renew_duration_seconds')
        ?.values.find(
          (x) =>
            (x as { metricName?: string }).metricName === 'conclave_renew_duration_seconds_count' &&
            x.labels.resource === 'jobs/metrics',
        )?.value ?? 0
    // renewMs is 100: two renewals, each timed through the instrumented backend.
    await until(async () => (await renewCount()) >= 2, 5_000, 'two renewals observed')
    await term.resign()
    expect(await ended('resigned')).toBe(1)
    expect(await v('is_leader')).toBe(0)
    expect(await v('term_remaining_seconds')).toBe(0)

    // 2: lost (the grant was removed behind the holder's back)
    term = await election.campaign()
    await store.release({ resource: 'jobs/metrics', candidate: election.id, token: term.token })
    await term.ended
    expect(await ended('lost')).toBe(1)

    // 3: expired (the event loop stalled past the deadline)
    term = await election.campaign()
    const stallUntil = performance.now() + 500
    while (performance.now() < stallUntil) {
      // busy
    }
    expect(await v('is_leader')).toBe(0) // the scrape reads the clock
    await term.ended
    expect(await ended('expired')).toBe(1)

    // 4: closed
    term = await election.campaign()
    await election.close()
    expect(await ended('closed')).toBe(1)
    expect(await v('terms_started_total')).toBe(4)
    expect(await v('backend_errors_total')).toBe(0)

    // Errors: a backend whose renewals start failing (closing it would end the term first).
    const failingHandle = store.handle()
    let broken = false
    const flaky: Backend = {
      ...failingHandle,
      async renew(requests) {
        if (broken) throw new BackendError('renew failed (injected)')
        return failingHandle.renew(requests)
      },
    }
    const failing = new Election(metrics.instrument(flaky), 'jobs/metrics-errors', {
      leaseMs: 300,
    })
    failing.on('error', () => {})
    metrics.track(failing)
    await failing.campaign()
    broken = true // every renewal fails from now on, and is retried
    await until(
      async () =>
        ((await v('backend_errors_total', { resource: 'jobs/metrics-errors' })) ?? 0) >= 1,
      5_000,
      'a counted backend error',
    )
    expect(await v('work_errors_total', { resource: 'jobs/metrics-errors' })).toBe(0)
    await failing.close()
    expect(await registry.metrics()).toMatch(
      /^conclave_terms_ended_total\{resource="jobs\/metrics",reason="expired"\} 1$/m,
    )
  })

  it('counts the work’s own errors (a throwing every() or run() callback) apart from backend errors', async () => {
    const registry = new Registry()
    const metrics = electionMetrics({ registry })
    const backend = memoryBackend()
    const viaEvery = new Election(backend, 'jobs/failing-every', { leaseMs: 600 })
    const viaRun = new Election(backend, 'jobs/failing-run', { leaseMs: 600 })
    const reported: Error[] = []
    for (const election of [viaEvery, viaRun]) {
      election.on('error', (error) => reported.push(error))
      metrics.track(election)
    }
    const v = (name: string, resource: string) => value(registry, `conclave_${name}`, { resource })
    expect(await v('work_errors_total', 'jobs/failing-every')).toBe(0)
    const controller = new AbortController()
    const crash = () => {
      throw new Error('report generator crashed')
    }
    const jobs = [
      every(viaEvery, 20, crash, { signal: controller.signal }),
      viaRun.run(crash, { signal: controller.signal }), // resigns, waits retryMs, wins again
    ]
    await until(
      async () =>
        ((await v('work_errors_total', 'jobs/failing-every')) ?? 0) >= 3 &&
        ((await v('work_errors_total', 'jobs/failing-run')) ?? 0) >= 2,
      5_000,
      'work errors from both',
    )
    controller.abort()
    await Promise.all(jobs)
    expect(reported.every((e) => e instanceof WorkError)).toBe(true)
    const counted =
      (await v('work_errors_total', 'jobs/failing-every'))! +
      (await v('work_errors_total', 'jobs/failing-run'))!
    expect(counted).toBe(reported.length)
    expect(await v('backend_errors_total', 'jobs/failing-every')).toBe(0)
    expect(await v('backend_errors_total', 'jobs/failing-run')).toBe(0)
    await Promise.all([viaEvery.close(), viaRun.close()])
  })

  it('refuses a registry without prom-client’s methods, and registering twice', () => {
    expect(() => electionMetrics({ registry: {} as never })).toThrow(OptionsError)
    const registry = new Registry()
    electionMetrics({ registry })
    expect(() => electionMetrics({ registry })).toThrow(/already registered/)
    expect(electionMetrics({ registry, prefix: 'other_' })).toBeDefined()
    expect(() => electionMetrics({ registry: new Registry(), prefix: '1x' })).toThrow(
      /Invalid prefix/,
    )
  })
})
