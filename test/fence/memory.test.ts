import { describe, expect, it } from 'vitest'
import { MemoryFence, StaleTokenError } from '../../src/fence/index.js'

describe('MemoryFence', () => {
  it('accepts equal and greater tokens, refuses smaller ones with the highest seen', () => {
    const fence = new MemoryFence<string>()
    fence.write('k', 5, 'a')
    fence.write('k', 5, 'b') // a term writes many times with its one token
    fence.write('k', 7, 'c')
    expect(fence.tryWrite('k', 6, 'stale')).toEqual({ accepted: false, highest: 7, value: 'c' })
    const error = (() => {
      try {
        fence.write('k', 3, 'stale')
      } catch (e) {
        return e
      }
    })()
    expect(error).toBeInstanceOf(StaleTokenError)
    expect(error).toMatchObject({ code: 'ERR_CONCLAVE_STALE_TOKEN', token: 3, highest: 7 })
    expect(fence.read('k')).toEqual({ value: 'c', highest: 7 })
    // Keys are fenced independently.
    expect(fence.tryWrite('other', 1, 'x')).toEqual({ accepted: true, highest: 1 })
  })

  it('refuses a token that is not a positive safe integer', () => {
    const fence = new MemoryFence()
    expect(() => fence.write('k', 0, 'x')).toThrow(/Invalid token: 0/)
    expect(() => fence.write('k', 1.5, 'x')).toThrow(/positive safe integer/)
  })
})
