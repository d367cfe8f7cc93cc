// How the CLI words a failure: exit codes by kind, one line per error chain, no passwords.
import { describe, expect, it } from 'vitest'
import { describeError, EXIT, exitCodeOf, redact } from '../../src/cli/report.js'
import {
  BackendError,
  BackendTimeoutError,
  CandidateInUseError,
  MissingPeerError,
  OptionsError,
  TicketsMismatchError,
  UsageError,
} from '../../src/errors.js'

describe('CLI failure reports', () => {
  it('redacts the password of every URL, and password query parameters', () => {
    expect(redact('redis://user:s3cret@host:6379/0')).toBe('redis://user:***@host:6379/0')
    expect(redact('rediss://:token@host')).toBe('rediss://:***@host')
    expect(redact('postgres://u:p@ss@db/x and etcd://h:2379')).toBe(
      'postgres://u:***@db/x and etcd://h:2379',
    )
    expect(redact('etcd://root:pw@h1:2379,h2:2379')).toBe('etcd://root:***@h1:2379,h2:2379')
    expect(redact('redis://h:6379?password=s3cret&db=1')).toBe('redis://h:6379?password=***&db=1')
    expect(redact('postgres://u@db/x redis://h:6379')).toBe('postgres://u@db/x redis://h:6379')
  })

  it('says each cause once, in one line', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), {
      code: 'ECONNREFUSED',
      syscall: 'connect',
    })
    const quoted = new BackendError('postgres: reading failed: connect ECONNREFUSED 127.0.0.1:1', {
      cause: refused,
    })
    expect(describeError(quoted)).toBe('postgres: reading failed: connect ECONNREFUSED 127.0.0.1:1')
    const wrapped = new BackendError('redis holders failed.', {
      cause: new Error('Connection is closed.\nfor good'),
    })
    expect(describeError(wrapped)).toBe('redis holders failed: Connection is closed. for good')
    expect(describeError(new BackendError('x://u:pw@h down'))).toBe('x://u:***@h down')
  })

  it('picks the exit code by the kind of failure', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED'), {
      code: 'ECONNREFUSED',
      syscall: 'connect',
    })
    expect(exitCodeOf(new OptionsError('--lease', '-5s', 'rule'))).toBe(EXIT.usage)
    expect(exitCodeOf(new BackendError('down', { cause: refused }))).toBe(EXIT.backend)
    expect(exitCodeOf(new BackendTimeoutError('slow'))).toBe(EXIT.backend)
    // The redis backend still builds its timeouts this way.
    expect(exitCodeOf(new BackendError('slow', { code: 'ERR_CONCLAVE_TIMEOUT' }))).toBe(
      EXIT.backend,
    )
    expect(exitCodeOf(new Error('wrapped', { cause: refused }))).toBe(EXIT.backend)
    expect(exitCodeOf(new MissingPeerError('ioredis', 'redis://'))).toBe(EXIT.backend)
    expect(exitCodeOf(new TicketsMismatchError('a/b', 2, 1))).toBe(EXIT.conflict)
    expect(exitCodeOf(new CandidateInUseError('a/b', 'c1'))).toBe(EXIT.conflict)
    expect(exitCodeOf(new UsageError('--lease is given twice.'))).toBe(EXIT.usage)
    expect(exitCodeOf(new TypeError('x is undefined'))).toBe(EXIT.unexpected)
  })
})
