// The shared option rules, as each module that takes options applies them.
import { describe, expect, it } from 'vitest'
import { clusterBackend } from '../../src/backends/cluster/index.js'
import { OptionsError } from '../../src/errors.js'
import {
  checkOptions,
  formatDuration,
  milliseconds,
  parseDuration,
  renamedOption,
} from '../../src/validate.js'

describe('validate.ts', () => {
  it('names an unknown key, its value and the known ones', () => {
    expect(() => checkOptions({ leaseMs: 1, lease: 5 }, ['leaseMs'], 'election')).toThrow(
      /Invalid lease: 5\. "lease" is not an election option\. Known options: leaseMs\./,
    )
    expect(() => checkOptions(null as unknown as object, ['a'], 'health')).toThrow(
      /Invalid options: null\. health options must be an object\./,
    )
  })

  it('never shows the value of an unknown key named like a secret', () => {
    expect(() => checkOptions({ apiToken: 'hunter2' }, ['url'], 'redisBackend')).toThrow(
      /Invalid apiToken: "\*\*\*"\. "apiToken" is not a redisBackend option\./,
    )
  })

  it('names milliseconds out of range, NaN included', () => {
    expect(() => milliseconds('drainMs', NaN, 0)).toThrow(
      /Invalid drainMs: NaN\. drainMs must be an integer number of milliseconds from 0 to 2147483647\./,
    )
    expect(milliseconds('drainMs', 0, 0)).toBe(0)
  })

  it('refuses a renamed option, pointing to its new name', () => {
    expect(() => renamedOption({ requestTimeoutMs: 5 }, 'requestTimeoutMs', 'timeoutMs')).toThrow(
      /Invalid requestTimeoutMs: 5\. "requestTimeoutMs" was renamed\. Use timeoutMs\./,
    )
  })

  it('applies to clusterBackend(): one name for the per-call timeout, unknown keys refused', () => {
    expect(() => clusterBackend({ requestTimeoutMs: 5 } as never)).toThrow(/Use timeoutMs/)
    expect(() => clusterBackend({ timeout: 5 } as never)).toThrow(OptionsError)
    expect(() => clusterBackend({ timeoutMs: 0 })).toThrow(/timeoutMs must be an integer/)
  })
})

describe('durations (validate.ts parseDuration, the one parser of every duration flag)', () => {
  it('reads units, combinations from the largest unit down, and plain numbers as ms', () => {
    const cases: [string, number][] = [
      ['500ms', 500],
      ['2s', 2_000],
      ['1.5s', 1_500],
      ['2m', 120_000],
      ['1m30s', 90_000],
      ['1h30m', 5_400_000],
      ['2s500ms', 2_500],
      ['1h', 3_600_000],
      ['1500', 1_500],
      [' 15s ', 15_000],
      ['0', 0],
    ]
    for (const [text, ms] of cases) expect(parseDuration(text), text).toBe(ms)
  })

  it('refuses what is not a duration', () => {
    for (const text of ['', '-5s', '1e3', '30s1m', '1s1s', '5 s', 's', '1d', '1.5', '1..5s'])
      expect(parseDuration(text), text).toBeUndefined()
  })

  it('refuses a fraction before the last part, a part not below the unit before it, and parts of a ms', () => {
    for (const text of [
      '1.5m30s',
      '1m90s',
      '1m60s',
      '1h60m',
      '1s1000ms',
      '0.4ms',
      '1.5ms',
      '1.0005s',
    ])
      expect(parseDuration(text), text).toBeUndefined()
    for (const [text, ms] of [
      ['90s', 90_000],
      ['1m59.5s', 119_500],
      ['1.5h', 5_400_000],
      ['1s999ms', 1_999],
      ['0.001s', 1],
    ] as const)
      expect(parseDuration(text), text).toBe(ms)
  })

  it('writes durations back in a form it reads', () => {
    for (const ms of [0, 250, 1_500, 60_000, 90_000, 3_600_000, 5_400_000, 86_400_000])
      expect(parseDuration(formatDuration(ms)), String(ms)).toBe(ms)
    expect(formatDuration(90_000)).toBe('1m30s')
    expect(formatDuration(86_400_000)).toBe('24h')
  })
})
