// The local backend's pieces without processes: option and URL checks, the hub state file, and
// the memory store's adopt/tokenFloor/snapshot the hub is built on.
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { backendFromUrl, localBackend } from '../../src/backends/local/index.js'
import { readState, TOKEN_SPAN, writeState } from '../../src/backends/local/state.js'
import {
  liveness,
  parseIdentity,
  selfIdentity,
  surelyDead,
} from '../../src/backends/local/identity.js'
import { Hub } from '../../src/backends/cluster/hub.js'
import { AgentRelay, MAX_AGENT_NAMESPACES } from '../../src/backends/local/agent-relay.js'
import { MemoryBackend } from '../../src/backends/memory.js'
import { backendFromUrl as cliBackend, requireSharedBackend } from '../../src/cli/backends.js'
import { OptionsError } from '../../src/errors.js'

const base = mkdtempSync(join(tmpdir(), 'conclave-units-'))
afterAll(() => rmSync(base, { recursive: true, force: true }))

describe('localBackend options', () => {
  it('names the field, the value and the rule for bad options', () => {
    const bad: [unknown, RegExp][] = [
      [undefined, /name is the app name/],
      [{ name: '' }, /name is the app name/],
      [{ name: 'a/b' }, /name is the app name/],
      [{ name: 'x'.repeat(65) }, /name is the app name/],
      [{ name: 'ok', dir: '' }, /dir is a directory path/],
      [{ name: 'ok', lock: 'flock' }, /lock is 'abstract'/],
      [{ name: 'ok', timeoutMs: 0 }, /timeoutMs must be an integer/],
      [{ name: 'ok', onError: 1 }, /onError must be a function/],
      [{ name: 'ok', nmae: 'typo' }, /"nmae" is not a local backend option/],
    ]
    for (const [options, rule] of bad) {
      expect(() => localBackend(options as never), JSON.stringify(options)).toThrow(OptionsError)
      expect(() => localBackend(options as never), JSON.stringify(options)).toThrow(rule)
    }
  })

  it('refuses a socket path over the macOS limit, and hashes a long name into a short one', () => {
    const deep = join(base, 'd'.repeat(90))
    expect(() => localBackend({ name: 'app', dir: deep })).toThrow(/would be over 100 bytes/)
    const mid = join(base, 'm'.repeat(40))
    const b = localBackend({ name: 'n'.repeat(64), dir: mid })
    expect(Buffer.byteLength(b.settings.address)).toBeLessThanOrEqual(100)
    expect(b.settings.address).toMatch(/[0-9a-f]{16}\.sock$/)
  })

  it('namespaces the lock by user, directory and name', () => {
    const a = localBackend({ name: 'one', dir: join(base, 'x') }).settings
    const b = localBackend({ name: 'two', dir: join(base, 'x') }).settings
    const c = localBackend({ name: 'one', dir: join(base, 'y') }).settings
    expect(new Set([a.lockAddress, b.lockAddress, c.lockAddress]).size).toBe(3)
    expect(a.lockAddress.startsWith(`\0conclave-${process.getuid!()}-`)).toBe(true)
    // Two spellings of one directory share the lock and the socket.
    const d = localBackend({ name: 'one', dir: `${join(base, 'x')}/./` }).settings
    expect([d.lockAddress, d.address]).toEqual([a.lockAddress, a.address])
  })

  it('parses local: URLs, and the CLI registry knows them as shared', async () => {
    const dir = join(base, 'url')
    const named = backendFromUrl(`local:jobs?dir=${encodeURIComponent(dir)}&timeoutMs=250`)
    expect(named.name).toBe('local')
    expect(
      (named as unknown as { settings: { name: string; timeoutMs: number } }).settings,
    ).toMatchObject({
      name: 'jobs',
      timeoutMs: 250,
    })
    const plain = (await cliBackend(`local:?dir=${encodeURIComponent(dir)}`)) as unknown as {
      settings: { name: string }
    }
    expect(plain.settings.name).toBe('default')
    expect(() => backendFromUrl('local:x?color=red')).toThrow(
      /"color" is not a local URL parameter/,
    )
    expect(() => requireSharedBackend('local:x', 'backend', 'conclave run')).not.toThrow()
  })
})

describe('the hub state file', () => {
  it('round-trips, and a missing one reads as fresh', () => {
    const path = join(base, 'state.json')
    expect(readState(path)).toEqual({ epoch: 0, maxLeaseMs: 0, clean: null, clients: [] })
    writeState(path, { epoch: 3, maxLeaseMs: 2000, clean: null, clients: null })
    expect(readState(path)).toEqual({ epoch: 3, maxLeaseMs: 2000, clean: null, clients: null })
    expect((JSON.parse(readFileSync(path, 'utf8')) as { epoch: number }).epoch).toBe(3)
  })

  it('keeps the client handles, and reads a list it cannot trust (missing, a bad entry) as unknown, so the next hub waits its full lease', () => {
    const path = join(base, 'clients.json')
    const identity = { pid: 42, pidNs: 'pid:[4026531836]', startTime: '123' }
    writeState(path, {
      epoch: 1,
      maxLeaseMs: 1000,
      clean: null,
      clients: [{ handle: '0123456789abcdef', identity }],
    })
    expect(readState(path).clients).toEqual([{ handle: '0123456789abcdef', identity }])
    writeFileSync(path, JSON.stringify({ epoch: 1, maxLeaseMs: 1000, clean: null }))
    expect(readState(path).clients).toBe(null)
    writeFileSync(
      path,
      JSON.stringify({ epoch: 1, maxLeaseMs: 1000, clients: [{ handle: 'x', identity }] }),
    )
    expect(readState(path).clients).toBe(null)
  })

  it('refuses to guess a fresh state from a file it cannot read (the old tokens and wait would be lost)', () => {
    const path = join(base, 'broken.json')
    writeFileSync(path, '{"epoch": 7, "maxLe')
    expect(() => readState(path)).toThrow(/cannot be read/)
  })
})

describe('MemoryBackend adopt / tokenFloor / snapshot', () => {
  const grant = (over: object = {}) => ({
    resource: 'r',
    candidate: 'a',
    token: 7,
    tickets: 1,
    remainingMs: 1_000,
    metadata: null,
    ...over,
  })

  it('gives tokens above the floor and adopts an older store’s grants under it', async () => {
    const store = new MemoryBackend({ tokenFloor: 2 * TOKEN_SPAN })
    expect(store.adopt(grant())).toBe(true)
    expect((await store.holders('r')).map((h) => [h.candidate, h.token])).toEqual([['a', 7]])
    // Its own tokens are above the floor, so above every adopted one.
    const other = await store.acquire({
      resource: 'other',
      candidate: 'b',
      tickets: 1,
      leaseMs: 1_000,
      metadata: null,
    })
    expect(other.acquired && other.token).toBe(2 * TOKEN_SPAN + 1)
    await store.close()
  })

  it('refuses an adoption that would break a rule', async () => {
    const store = new MemoryBackend({ tokenFloor: TOKEN_SPAN })
    expect(store.adopt(grant())).toBe(true)
    expect(store.adopt(grant({ candidate: 'b', token: 8 }))).toBe(false) // its ticket is taken
    expect(store.adopt(grant({ token: 9 }))).toBe(false) // a holds another token
    expect(store.adopt(grant({ resource: 's', token: TOKEN_SPAN + 1 }))).toBe(false) // this store’s range
    expect(store.adopt(grant({ resource: 't', tickets: 2 }))).toBe(true)
    expect(store.adopt(grant({ resource: 't', candidate: 'b', token: 5 }))).toBe(false) // other tickets
    expect(store.adopt(grant())).toBe(true) // the same grant again: kept
    expect(store.snapshot().map((g) => [g.resource, g.candidate, g.token])).toEqual([
      ['r', 'a', 7],
      ['t', 'a', 7],
    ])
    await store.close()
  })
})

describe('the hub a local socket is served by', () => {
  /** One peer's connection: `call` sends a request and resolves with the hub's answer. */
  function peer(hub: Hub) {
    const waiting = new Map<string, (m: { ok: boolean; value?: unknown }) => void>()
    let next = 0
    const connection = hub.connect((message) => {
      const m = message as { id: string; ok: boolean; value?: unknown }
      waiting.get(m.id)?.(m)
    })
    const call = (op: string, args: unknown) =>
      new Promise<{ ok: boolean; value?: unknown }>((resolve) => {
        const id = `r${next++}`
        waiting.set(id, resolve)
        connection.receive({ conclave: 1, type: 'request', id, op, args })
      })
    return { call, close: () => connection.close() }
  }
  const ask = (candidate: string) => ({
    resource: 'r',
    candidate,
    tickets: 1,
    leaseMs: 60_000,
    metadata: null,
  })

  it('keeps a closed connection’s grants with releaseOnClose false (its process may live on), so its peer can adopt them back', async () => {
    const store = new MemoryBackend()
    const hub = new Hub(store, { releaseOnClose: false, adopt: (g) => store.adopt(g) })
    const a = peer(hub)
    const got = (await a.call('acquire', ask('a'))).value as { acquired: true; token: number }
    expect(got.acquired).toBe(true)
    await a.close()
    // Nobody else wins while a's lease runs: a socket that closed is not a process that died.
    const b = peer(hub)
    expect(((await b.call('acquire', ask('b'))).value as { acquired: boolean }).acquired).toBe(
      false,
    )
    // a, reconnected, takes its grant back.
    const again = peer(hub)
    const adopted = await again.call('adopt', {
      resource: 'r',
      candidate: 'a',
      token: got.token,
      tickets: 1,
      remainingMs: 30_000,
      metadata: null,
    })
    expect(adopted.value).toBe(true)
    expect((await store.holders('r')).map((h) => [h.candidate, h.token])).toEqual([
      ['a', got.token],
    ])
    await store.close()
  })

  it('releases a closed connection’s grants at once by default (node:cluster: the worker is gone)', async () => {
    const store = new MemoryBackend()
    const hub = new Hub(store)
    const a = peer(hub)
    expect(((await a.call('acquire', ask('a'))).value as { acquired: boolean }).acquired).toBe(true)
    await a.close()
    expect(await store.holders('r')).toEqual([])
    await store.close()
  })
})

describe('telling a dead client process from a live one (identity.ts)', () => {
  const startTime = (pid: number) => {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return text.slice(text.lastIndexOf(')') + 2).split(' ')[19]!
  }

  it('is sure of a process that exited, and of a pid whose start time differs (reused)', async () => {
    const child = spawn('sleep', ['30'])
    try {
      const who = { ...selfIdentity(), pid: child.pid!, startTime: startTime(child.pid!) }
      expect(liveness(who)).toBe('alive')
      expect(liveness({ ...who, startTime: String(Number(who.startTime) + 1) })).toBe('dead')
      child.kill('SIGKILL')
      await new Promise((resolve) => child.once('exit', resolve))
      expect(liveness(who)).toBe('dead')
      expect(await surelyDead(who)).toBe(true)
    } finally {
      child.kill('SIGKILL')
    }
  })

  it('is sure of a zombie (exited, not reaped yet), not of a live process', async () => {
    // The shell's background child exits; the exec'd sleep never reaps it.
    const parent = spawn('sh', ['-c', 'sleep 0.1 & echo $!; exec sleep 30'])
    try {
      const pid = Number(
        await new Promise<string>((resolve) => parent.stdout.once('data', (d) => resolve(`${d}`))),
      )
      const who = { ...selfIdentity(), pid, startTime: startTime(pid) }
      expect(await surelyDead(who, 10_000)).toBe(true)
      expect(readFileSync(`/proc/${pid}/stat`, 'utf8')).toMatch(/\) Z /)
      expect(
        await surelyDead({ ...who, pid: parent.pid!, startTime: startTime(parent.pid!) }, 50),
      ).toBe(false)
    } finally {
      parent.kill('SIGKILL')
    }
  })

  it('is never sure across pid namespaces, without a start time, or of itself', async () => {
    const child = spawn('sleep', ['30'])
    try {
      const who = { ...selfIdentity(), pid: child.pid!, startTime: startTime(child.pid!) }
      child.kill('SIGKILL')
      await new Promise((resolve) => child.once('exit', resolve))
      expect(liveness({ ...who, pidNs: 'pid:[1]' })).toBe('unknown')
      expect(liveness({ ...who, pidNs: null })).toBe('unknown')
      expect(liveness({ ...who, startTime: null })).toBe('unknown')
      expect(await surelyDead({ ...who, pidNs: 'pid:[1]' })).toBe(false)
      expect(liveness(selfIdentity())).toBe('alive')
    } finally {
      child.kill('SIGKILL')
    }
  })

  it('reads only a well-formed claim', () => {
    const good = { pid: 12, pidNs: 'pid:[4026531836]', startTime: '123' }
    expect(parseIdentity(good)).toEqual(good)
    expect(parseIdentity({ pid: 12, pidNs: null, startTime: null })).toEqual({
      pid: 12,
      pidNs: null,
      startTime: null,
    })
    for (const bad of [
      null,
      'x',
      { ...good, pid: 0 },
      { ...good, pid: 1.5 },
      { ...good, pidNs: 'net:[1]' },
      { ...good, startTime: '-1' },
      { ...good, startTime: 7 },
    ]) {
      expect(parseIdentity(bad), JSON.stringify(bad)).toBeUndefined()
    }
  })
})

describe("a hub connection's own releaseOnClose", () => {
  function open(hub: Hub, releaseOnClose: () => boolean | Promise<boolean>) {
    const answers = new Map<string, (value: unknown) => void>()
    const connection = hub.connect(
      (m) => answers.get((m as { id: string }).id)?.((m as { value: unknown }).value),
      { releaseOnClose },
    )
    let n = 0
    return {
      call: (op: string, args: unknown) =>
        new Promise<unknown>((resolve) => {
          const id = `c${n++}`
          answers.set(id, resolve)
          connection.receive({ conclave: 1, type: 'request', id, op, args })
        }),
      close: () => connection.close(),
    }
  }
  const ask = { resource: 'r', candidate: 'a', tickets: 1, leaseMs: 60_000, metadata: null }

  it('releases at once when it says the peer is gone, keeps the grants when it says not', async () => {
    const store = new MemoryBackend()
    const hub = new Hub(store, { releaseOnClose: false, adopt: (g) => store.adopt(g) })
    const gone = open(hub, () => Promise.resolve(true))
    await gone.call('acquire', ask)
    await gone.close()
    expect(await store.holders('r')).toEqual([])
    const alive = open(hub, () => false)
    await alive.call('acquire', ask)
    await alive.close()
    expect((await store.holders('r')).map((h) => h.candidate)).toEqual(['a'])
    await store.close()
  })

  it('does not release a grant taken over while it decided (adopted by a new connection)', async () => {
    const store = new MemoryBackend()
    const hub = new Hub(store, { releaseOnClose: false, adopt: (g) => store.adopt(g) })
    let decide!: (dead: boolean) => void
    const old = open(hub, () => new Promise<boolean>((resolve) => (decide = resolve)))
    const got = (await old.call('acquire', ask)) as { token: number }
    const closing = old.close()
    const again = open(hub, () => false)
    const grant = { ...ask, token: got.token, remainingMs: 30_000 }
    delete (grant as { leaseMs?: number }).leaseMs
    expect(await again.call('adopt', grant)).toBe(true)
    decide(true)
    await closing
    expect((await store.holders('r')).map((h) => [h.candidate, h.token])).toEqual([
      ['a', got.token],
    ])
    await store.close()
  })
})

describe("the hub's agent relay", () => {
  it(`routes at most ${MAX_AGENT_NAMESPACES} agent namespaces, and says so beyond`, async () => {
    const store = new MemoryBackend()
    const errors: Error[] = []
    const relay = new AgentRelay(store, (error) => errors.push(error))
    const sent: unknown[] = []
    const peer = {
      id: relay.nextId(),
      pid: () => process.pid,
      send: (message: object) => void sent.push(message),
      connected: () => true,
    }
    const hello = (ns: string) =>
      relay.receive(peer, { ns, resource: 'r', message: { [ns]: 1, type: 'hello' } })
    for (let i = 0; i < MAX_AGENT_NAMESPACES; i++) hello(`ns${i}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
    expect(sent).toHaveLength(MAX_AGENT_NAMESPACES) // one welcome each
    expect(errors).toEqual([])
    hello('one-too-many')
    await new Promise((resolve) => setTimeout(resolve, 10))
    expect(sent).toHaveLength(MAX_AGENT_NAMESPACES)
    expect(errors.map((e) => e.message)).toEqual([
      expect.stringMatching(/beyond the 32 this hub routes/),
    ])
    relay.close()
    await store.close()
  })
})
