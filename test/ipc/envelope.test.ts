// Every class of the catalogue (CODES) survives the IPC envelope: the same class, code, name,
// message and fields, over both serializations (JSON and structured clone), through the hub's
// codec and the agent's, and through a bare codec that owns every conclave error.
import { deserialize, serialize } from 'node:v8'
import { describe, expect, it } from 'vitest'
import { errorFromWire, errorToWire } from '../../src/agent/protocol.js'
import {
  fromWire as hubFromWire,
  toWire as hubToWire,
} from '../../src/backends/cluster/protocol.js'
import {
  AgentClosedError,
  AgentDisconnectedError,
  AgentError,
  AgentStartedError,
  AgentTimeoutError,
  BackendClosedError,
  BackendError,
  BackendTimeoutError,
  BusyError,
  CandidateInUseError,
  ClosedError,
  CODES,
  type CodeEntry,
  ConclaveError,
  DesignatedLostError,
  ElectionClosedError,
  isFinal,
  LeadershipLostError,
  MissingPeerError,
  NoHandlerError,
  NoIpcError,
  NotDesignatedError,
  NotPrimaryError,
  NotSerializableError,
  OptionsError,
  Pm2Error,
  ProtocolError,
  RedisClusterError,
  RemoteError,
  RemoteHubError,
  SchemaOldError,
  SchemaTooNewError,
  StaleTokenError,
  TicketsMismatchError,
  UsageError,
  WorkError,
  WorkerLostError,
} from '../../src/errors.js'
import { wireErrors } from '../../src/ipc/envelope.js'

/** At least one error of every code; the closed code has its two named variants as well. */
const SAMPLES: ConclaveError[] = [
  new OptionsError('leaseMs', -1, 'leaseMs is a positive integer of ms.'),
  new LeadershipLostError('jobs/nightly', 7, 'expired'),
  new ClosedError('Something is closed.'),
  new ElectionClosedError('jobs/nightly'),
  new BackendClosedError('redis'),
  new BusyError('jobs/nightly', 'campaigning'),
  new BackendError('redis holders failed: ECONNREFUSED', { cause: new Error('ECONNREFUSED') }),
  new BackendTimeoutError('etcd at h:2379: renew got no answer in 500 ms'),
  new RedisClusterError('redis at h:6379 answered MOVED 1234 h:7001: use a Cluster client'),
  new TicketsMismatchError('jobs/pool', 2, 1),
  new WorkError('jobs/nightly', 3, new TypeError('x is undefined')),
  new MissingPeerError('pg', 'postgresBackend()'),
  new ProtocolError('Invalid op: "explode".'),
  new RemoteHubError('boom (from the cluster hub)'),
  new CandidateInUseError('jobs/nightly', 'scheduler'),
  new NotPrimaryError(),
  new NoIpcError(),
  new Pm2Error('fork', 'clusterBackend() runs under PM2 fork mode.'),
  new SchemaOldError('conclave', 1, 3),
  new SchemaTooNewError('conclave', 9, 3),
  new StaleTokenError('Redis key "orders"', 4, 6),
  new UsageError('--lease is given twice.'),
  new AgentClosedError(),
  new DesignatedLostError('Worker 2 exited during the call.'),
  new AgentDisconnectedError('The IPC channel to the primary closed.'),
  new NotDesignatedError('worker 2 (pid 9) is not the designated process.'),
  new NotSerializableError('args[0].when', 'json', 'a Date becomes a string in JSON.'),
  new NoHandlerError('No handler "cache/get" is registered in worker 1 (pid 8).'),
  new AgentStartedError(),
  new AgentTimeoutError('The call of "cache/get" took longer than 100 ms.'),
  new WorkerLostError('Worker 3 exited before it answered.'),
]

const entries = Object.entries(CODES as Readonly<Record<string, CodeEntry>>)
const entryOf = (error: ConclaveError) =>
  (CODES as Readonly<Record<string, CodeEntry>>)[error.code]!

/** The two serializations node:cluster offers. */
const carriers: Record<string, (value: unknown) => unknown> = {
  json: (value) => JSON.parse(JSON.stringify(value)) as unknown,
  advanced: (value) => deserialize(serialize(value)) as unknown,
}

/** A bare codec over the shared envelope that treats every conclave error as its own. */
const everyCode = wireErrors<null>({
  own: (error) => error instanceof ConclaveError,
  stack: true,
  foreign: (w) => new Error(w.message),
})

function expectSame(rebuilt: Error, original: ConclaveError, message = original.message): void {
  expect(rebuilt).toBeInstanceOf(original.constructor)
  expect(rebuilt).toBeInstanceOf(entryOf(original).class)
  expect(rebuilt).toBeInstanceOf(ConclaveError)
  expect(rebuilt.constructor).toBe(original.constructor)
  expect(rebuilt).toMatchObject({ code: original.code, name: original.name, message })
  const fields = entryOf(original).fields
  for (const field of fields) {
    expect((rebuilt as unknown as Record<string, unknown>)[field], field).toEqual(
      (original as unknown as Record<string, unknown>)[field],
    )
  }
  if (original instanceof AgentError) {
    expect((rebuilt as AgentError).retryable).toBe(original.retryable)
  }
  expect(isFinal(rebuilt)).toBe(isFinal(original))
}

describe('the error catalogue over the IPC envelope', () => {
  it('has a sample of every code, and each class makes errors of its own code', () => {
    expect([...new Set(SAMPLES.map((e) => e.code))].sort()).toEqual(
      entries.map(([code]) => code).sort(),
    )
    for (const sample of SAMPLES) {
      expect(sample, sample.code).toBeInstanceOf(entryOf(sample).class)
      expect(sample.name).toBe(sample.constructor.name)
      // Every field the wire carries is one the class has.
      for (const field of entryOf(sample).fields) expect(sample).toHaveProperty(field)
    }
    // A class belongs to one code.
    const classes = entries.map(([, entry]) => entry.class)
    expect(new Set(classes).size).toBe(classes.length)
  })

  for (const [mode, carry] of Object.entries(carriers)) {
    it(`rebuilds every class with its code, message, fields and stack (${mode})`, () => {
      for (const original of SAMPLES) {
        const rebuilt = everyCode.fromWire(carry(everyCode.toWire(original)), null)
        expectSame(rebuilt, original)
        expect(rebuilt.stack).toBe(original.stack)
      }
    })

    it(`the hub hands a worker every class as itself, saying where it came from (${mode})`, () => {
      for (const original of SAMPLES) {
        const rebuilt = hubFromWire(carry(hubToWire(original)), 'the cluster hub')
        expectSame(rebuilt, original, `${original.message} (from the cluster hub)`)
      }
    })

    it(`the agent rebuilds its own classes, and others as a handler's RemoteError (${mode})`, () => {
      for (const original of SAMPLES) {
        const rebuilt = errorFromWire(carry(errorToWire(original)), { workerId: 2, pid: 9 })
        if (original instanceof AgentError) {
          expectSame(rebuilt, original)
          expect(rebuilt.stack).toBe(original.stack)
        } else {
          expect(rebuilt).toBeInstanceOf(RemoteError)
          expect(rebuilt).toMatchObject({
            name: original.name,
            code: original.code,
            message: original.message,
          })
        }
      }
    })
  }

  it('rebuilds a foreign error, and a code outside the catalogue, as the side’s foreign error', () => {
    const foreign = hubFromWire(
      hubToWire(Object.assign(new TypeError('x is undefined'), { code: 'ESOMETHING' })),
      'the cluster hub',
    )
    expect(foreign).toBeInstanceOf(RemoteHubError)
    expect(foreign).toMatchObject({
      name: 'TypeError',
      code: 'ESOMETHING',
      message: 'x is undefined (from the cluster hub)',
    })
    const uncoded = hubFromWire(hubToWire(new Error('plain')), 'the cluster hub')
    expect(uncoded).toMatchObject({ code: 'ERR_CONCLAVE_REMOTE' })
    const unknown = hubFromWire(
      { name: 'X', message: 'y', code: 'ERR_CONCLAVE_NOT_A_CODE', own: true },
      'the cluster hub',
    )
    expect(unknown).toBeInstanceOf(RemoteHubError)
    expect(unknown).toMatchObject({ code: 'ERR_CONCLAVE_NOT_A_CODE' })
    const prototype = hubFromWire({ name: 'X', message: 'y', code: 'constructor', own: true }, 'h')
    expect(prototype).toBeInstanceOf(RemoteHubError)
  })

  it('rebuilds from what a hostile or older peer may send: missing or mistyped fields', () => {
    const rebuilt = everyCode.fromWire(
      {
        name: 'TicketsMismatchError',
        message: 'm',
        code: 'ERR_CONCLAVE_TICKETS_MISMATCH',
        own: true,
        fields: { resource: 5, tickets: 'two' },
      },
      null,
    )
    expect(rebuilt).toBeInstanceOf(TicketsMismatchError)
    expect(rebuilt).toMatchObject({ resource: '', message: 'm' })
    expect(Number.isNaN((rebuilt as TicketsMismatchError).tickets)).toBe(true)
    const closed = everyCode.fromWire(
      { name: 'Whatever', message: 'gone', code: 'ERR_CONCLAVE_CLOSED', own: true },
      null,
    )
    expect(closed.constructor).toBe(ClosedError)
    expect(isFinal(closed)).toBe(true)
  })
})
