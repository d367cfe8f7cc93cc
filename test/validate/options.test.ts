// The shared option rules, as each module that takes options applies them.
import { describe, expect, it } from 'vitest'
import { clusterBackend } from '../../src/backends/cluster/index.js'
import { OptionsError } from '../../src/errors.js'
import { checkOptions, milliseconds, renamedOption } from '../../src/validate.js'

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
