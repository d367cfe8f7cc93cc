// The `local` backend with real processes (testkit/local.ts): the hub killed (-9) while others
// hold and wait, the hub and the holder killed together, a stale socket file, a paused hub,
// two apps and two users on one host. The elections run here; each backend is a separate peer
// process, so killing a peer kills a hub or a client, never the election that checks safety.
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { chmodSync, chownSync, existsSync, mkdtempSync, rmSync } from 'node:fs'
import { createServer, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import type { Backend } from '../../src/backend.js'
import { defaultDir, localBackend } from '../../src/backends/local/index.js'
import { Election } from '../../src/election.js'
import { OptionsError } from '../../src/errors.js'
import type { Term } from '../../src/term.js'
import { localDir, type LocalPeer, startLocalPeer } from '../../testkit/local.js'
import { unprivilegedUser } from '../../testkit/process.js'
import { sleep, until } from '../helpers/wait.js'

// Long enough that a loaded 2-core machine never costs the holder its term across a hub change.
const L = 2_000
const peers: LocalPeer[] = []
const elections: Election[] = []
const dirs: { remove(): Promise<void> }[] = []

afterEach(async () => {
  await Promise.all(elections.splice(0).map((e) => e.close().catch(() => {})))
  await Promise.all(peers.splice(0).map((p) => p.kill()))
})
afterAll(async () => {
  for (const dir of dirs) await dir.remove()
})

function newDir(): string {
  const dir = localDir()
  dirs.push(dir)
  return dir.dir
}

async function peer(name: string, dir: string, timeoutMs?: number): Promise<LocalPeer> {
  const p = await startLocalPeer({ name, dir, ...(timeoutMs ? { timeoutMs } : {}) })
  peers.push(p)
  return p
}

function election(backend: Backend, resource: string, id: string): Election {
  const e = new Election(backend, resource, { leaseMs: L, id })
  e.on('error', () => {})
  elections.push(e)
  return e
}

/** Records every term of `es`; `overlaps` lists any moment two were active at once. */
function track(es: Election[]) {
  const terms: Term[] = []
  const overlaps: string[] = []
  for (const e of es) {
    e.on('elected', (term: Term) => {
      const active = terms.filter((t) => t.active)
      if (active.length > 0)
        overlaps.push(`${term.candidate} elected while ${active[0]!.candidate} active`)
      terms.push(term)
    })
  }
  return { terms, overlaps }
}

async function hubs(ps: LocalPeer[]): Promise<LocalPeer[]> {
  const flags = await Promise.all(ps.map((p) => p.isHub().catch(() => false)))
  return ps.filter((_, i) => flags[i])
}

/** test/local/raw-client.ts holding `resource` as 'raw' (see there); its output lines. */
function rawClient(socket: string, resource: string, leaseMs: number, again = false) {
  const raw = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      fileURLToPath(new URL('./raw-client.ts', import.meta.url)),
      socket,
      resource,
      'raw',
      String(leaseMs),
      ...(again ? ['again'] : []),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  )
  return { raw, lines: createInterface({ input: raw.stdout })[Symbol.asyncIterator]() }
}

describe('local: hub takeover', () => {
  it('kill -9 of the hub while others hold and wait: one new hub at once, the holder keeps its term (unless load stalls it past its deadline), never two holders, tokens grow', async () => {
    const dir = newDir()
    const hub = await peer('takeover', dir)
    const a = await peer('takeover', dir)
    const b = await peer('takeover', dir)
    expect(await hubs([hub, a, b])).toEqual([hub])
    const res = 'faults/takeover'
    const ea = election(a.backend, res, 'a')
    const eb = election(b.backend, res, 'b')
    const { terms, overlaps } = track([ea, eb])
    const held = await ea.campaign()
    const waiting = eb.campaign()
    await sleep(L / 2)
    const killedAt = performance.now()
    await hub.kill()
    await until(async () => (await hubs([a, b])).length === 1, L, 'a new hub')
    const newHubAfter = performance.now() - killedAt
    expect(newHubAfter).toBeLessThan(L)
    // Through several renewals on the new hub: a still holds, with its token (it re-registered);
    // b still waits. A loaded machine may stall a past its deadline (its term then ends, safely);
    // what must never happen is b winning while a's term is active.
    await sleep(2 * L)
    expect(await hubs([a, b])).toHaveLength(1)
    const kept = held.active
    if (kept) {
      expect((await ea.leaders()).map((h) => [h.candidate, h.token])).toEqual([['a', held.token]])
      await held.resign()
    }
    const next = await waiting
    expect(next.candidate).toBe('b')
    expect(next.token).toBeGreaterThan(held.token)
    expect(overlaps).toEqual([])
    expect(terms.map((t) => t.candidate)).toEqual(['a', 'b'])
    console.log(
      `[local] new hub ${newHubAfter.toFixed(1)} ms after kill -9 of the hub (lease ${L} ms)`,
    )
  }, 30_000)

  // A lease long enough that "before it would have ended" cannot be met by the lease running out.
  const LONG = 20_000
  const ask = (candidate: string) => ({
    resource: 'faults/both',
    candidate,
    tickets: 1,
    leaseMs: LONG,
    metadata: null,
  })

  it('kill -9 of the hub and the holder together: every survivor re-registers, so the new hub ends its wait early; the waiter wins long before the lease would have ended, with a larger token', async () => {
    const dir = newDir()
    const hub = await peer('both', dir)
    const a = await peer('both', dir)
    const b = await peer('both', dir)
    // The grant is held by a's own process (its backend), so killing a ends the holder itself.
    const askedAt = performance.now()
    const got = await a.backend.acquire(ask('a'))
    expect(got.acquired).toBe(true)
    const waiting = new Election(b.backend, 'faults/both', { leaseMs: LONG, id: 'b' })
    waiting.on('error', () => {})
    elections.push(waiting)
    const won = waiting.campaign()
    await sleep(200)
    await Promise.all([hub.kill(), a.kill()])
    const next = await won
    const wonAt = performance.now()
    expect(next.candidate).toBe('b')
    expect(next.token).toBeGreaterThan(got.acquired ? got.token : 0)
    expect(wonAt).toBeLessThan(askedAt + LONG)
  }, 60_000)

  it('a holder paused (SIGSTOP) when the hub dies cannot re-register: the new hub grants nothing meanwhile; resumed, it keeps its grant, and the waiter wins after its release', async () => {
    const dir = newDir()
    const hub = await peer('paused-holder', dir)
    const a = await peer('paused-holder', dir)
    const b = await peer('paused-holder', dir)
    const got = await a.backend.acquire(ask('a'))
    expect(got.acquired).toBe(true)
    a.child.kill('SIGSTOP')
    try {
      await hub.kill()
      // b reaches the new hub (its asks are answered again), then keeps being refused.
      await until(
        async () =>
          b.backend.acquire(ask('b')).then(
            (answer) => (expect(answer.acquired).toBe(false), true),
            () => false,
          ),
        10_000,
        'an answer from the new hub',
      )
      for (let i = 0; i < 10; i++) {
        const answer = await b.backend.acquire(ask('b'))
        expect(answer.acquired).toBe(false)
        await sleep(100)
      }
    } finally {
      a.child.kill('SIGCONT')
    }
    // Resumed: a re-registers its grant at the new hub; b still waits for it.
    await until(
      async () => (await a.backend.holders('faults/both').catch(() => [])).length === 1,
      10_000,
      "a's grant at the new hub",
    )
    expect((await b.backend.holders('faults/both')).map((h) => [h.candidate, h.token])).toEqual([
      ['a', got.acquired ? got.token : 0],
    ])
    expect((await b.backend.acquire(ask('b'))).acquired).toBe(false)
    await a.backend.release({ resource: 'faults/both', candidate: 'a' })
    await until(
      async () => (await b.backend.acquire(ask('b'))).acquired,
      10_000,
      'b winning after the release',
    )
  }, 60_000)

  it('a grant a release handed on to the waiter in line is re-registered at the next hub like any other: kill -9 of the hub keeps it, and a third candidate is not granted meanwhile', async () => {
    const dir = newDir()
    const hub = await peer('pushed', dir)
    const a = await peer('pushed', dir)
    const b = await peer('pushed', dir)
    const c = await peer('pushed', dir)
    const res = 'faults/pushed'
    const ea = election(a.backend, res, 'a')
    const eb = election(b.backend, res, 'b')
    const ec = election(c.backend, res, 'c')
    const { overlaps } = track([ea, eb, ec])
    const first = await ea.campaign()
    const inLine = new Promise((resolve) => eb.once('waiting', resolve))
    const waiting = eb.campaign()
    await inLine
    await first.resign()
    const held = await waiting
    const third = ec.campaign()
    await hub.kill()
    await until(async () => (await hubs([a, b, c])).length === 1, 2 * L, 'a new hub')
    // Through renewals on the new hub: b still holds its grant (re-registered there); c waits.
    await sleep(2 * L)
    expect(held.active).toBe(true)
    expect((await eb.leaders()).map((h) => [h.candidate, h.token])).toEqual([['b', held.token]])
    await held.resign()
    const next = await third
    expect(next.token).toBeGreaterThan(held.token)
    expect(overlaps).toEqual([])
  }, 30_000)

  it('a stale socket file (its hub killed) does not block the next start', async () => {
    const dir = newDir()
    const first = await peer('stale', dir)
    await first.kill()
    expect(existsSync(join(dir, 'stale.sock'))).toBe(true)
    const second = await peer('stale', dir)
    expect(await second.isHub()).toBe(true)
    const e = election(second.backend, 'faults/stale', 'x')
    const term = await e.campaign()
    expect(term.active).toBe(true)
  }, 30_000)

  it('a paused (SIGSTOP) hub is never taken for a dead one: no second hub while it holds the lock; it serves again when resumed', async () => {
    const dir = newDir()
    const hub = await peer('paused', dir)
    const a = await peer('paused', dir, 300)
    process.kill(hub.pid, 'SIGSTOP')
    try {
      const e = election(a.backend, 'faults/paused', 'a')
      const campaign = e.campaign()
      // Many call timeouts of a: none of them makes it the hub.
      await sleep(1_500)
      expect(await a.isHub()).toBe(false)
      process.kill(hub.pid, 'SIGCONT')
      const term = await campaign
      expect(term.active).toBe(true)
      expect(await hubs([hub, a])).toEqual([hub])
    } finally {
      process.kill(hub.pid, 'SIGCONT')
    }
  }, 30_000)

  it('a hub that stops cleanly while another process holds hands the grant over: the next hub starts, the holder keeps its term, a waiter is refused until its release', async () => {
    const dir = newDir()
    // The hub in this process: closing its only handle stops it cleanly (a hand-over).
    const hubHandle = localBackend({ name: 'clean', dir })
    await hubHandle.holders('faults/clean')
    const a = await peer('clean', dir)
    const b = await peer('clean', dir)
    const [ea, eb] = [
      election(a.backend, 'faults/clean', 'a'),
      election(b.backend, 'faults/clean', 'b'),
    ]
    const { overlaps } = track([ea, eb])
    const held = await ea.campaign()
    const waiting = eb.campaign()
    waiting.catch(() => {})
    await hubHandle.close()
    // One of them hosts the next hub, which answers (the grant's lease left is not a whole
    // number of ms: the hand-over must still load).
    await until(async () => (await hubs([a, b])).length === 1, 2 * L, 'a next hub')
    expect(await a.backend.holders('faults/clean')).toMatchObject([{ candidate: 'a' }])
    await sleep(L)
    expect(held.active).toBe(true)
    await ea.resign()
    const next = await waiting
    expect(next.token).toBeGreaterThan(held.token)
    expect(overlaps).toEqual([])
  }, 30_000)

  it('the pidfile lock (other systems) takes over from a killed hub too', async () => {
    const dir = newDir()
    const start = async () => {
      const p = await startLocalPeer({ name: 'pid', dir, lock: 'pidfile' })
      peers.push(p)
      return p
    }
    const hub = await start()
    const a = await start()
    const ea = election(a.backend, 'faults/pid', 'a')
    const held = await ea.campaign()
    await hub.kill()
    await until(async () => await a.isHub(), 2 * L, 'a to become the hub')
    await sleep(L)
    expect(held.active).toBe(true)
  }, 30_000)
})

/**
 * A hub that dies between accepting connections and answering them, as the kernel lets a killed
 * hub's listening socket do for a moment: it takes the socket path at `address` and, at the
 * first request to re-register a grant (`adopt`), cuts every connection it has and frees the path.
 */
async function dyingHub(address: string) {
  rmSync(address)
  let cut = 0
  const sockets = new Set<Socket>()
  const server = createServer((socket) => {
    sockets.add(socket)
    socket.on('data', (chunk) => {
      if (!String(chunk).includes('"adopt"') || cut > 0) return
      cut++
      for (const s of sockets) s.destroy()
      server.close()
      rmSync(address, { force: true })
    })
    socket.on('error', () => {})
  })
  await new Promise<void>((resolve) => server.listen(address, resolve))
  return {
    /** How many times it died (at most once). */
    get cut() {
      return cut
    },
    close: () => void server.close(),
  }
}

describe('local: hub takeover, a hub that dies under a reconnect', () => {
  it('a hub that accepts the reconnect and dies before answering the re-registration: the holder keeps its grant and re-registers at the next hub', async () => {
    const dir = newDir()
    const hub = await peer('dying', dir)
    // The holder's backend in this process, so the dying listener below can sit between it and
    // the next hub.
    const a = localBackend({ name: 'dying', dir })
    await a.holders('faults/dying')
    const ea = election(a, 'faults/dying', 'a')
    const held = await ea.campaign()
    // A hub process that dies between accepting a connection and answering it (dyingHub).
    process.kill(hub.pid, 'SIGSTOP')
    const dying = await dyingHub(a.settings.address)
    try {
      await hub.kill()
      await until(() => Promise.resolve(a.isHub), 2 * L, 'a to become the hub')
      expect(dying.cut).toBe(1)
      // Through renewals on the new hub (this process): the grant was re-registered there.
      await sleep(L)
      expect(held.active).toBe(true)
      expect((await ea.leaders()).map((h) => [h.candidate, h.token])).toEqual([['a', held.token]])
    } finally {
      dying.close()
      await ea.close()
      await a.close()
    }
  }, 30_000)
  it('the same with a waiter in another process: the new hub ends its wait only once the holder re-registered there, so the waiter is never granted while the holder holds', async () => {
    const dir = newDir()
    const hub = await peer('dying-wait', dir)
    const b = await peer('dying-wait', dir)
    const a = localBackend({ name: 'dying-wait', dir })
    await a.holders('faults/dying')
    const ea = election(a, 'faults/dying', 'a')
    const eb = election(b.backend, 'faults/dying', 'b')
    const { overlaps } = track([ea, eb])
    const held = await ea.campaign()
    const waiting = eb.campaign()
    await sleep(200)
    // As above; the dying listener cuts b's connection too (b holds nothing, so it re-registers
    // no grant, only its watch, which goes unanswered).
    process.kill(hub.pid, 'SIGSTOP')
    const dying = await dyingHub(a.settings.address)
    try {
      await hub.kill()
      await until(async () => a.isHub || (await b.isHub()), 2 * L, 'a new hub')
      expect(dying.cut).toBe(1)
      // Through renewals on the new hub: a still holds its grant there, b still waits. (Before,
      // a dropped the grant it could not re-register, told the next hub it held nothing, and
      // that hub ended its wait early: b was granted while a's term ran on to its next renewal.)
      await sleep(L)
      expect(overlaps).toEqual([])
      expect(held.active).toBe(true)
      expect((await ea.leaders()).map((h) => [h.candidate, h.token])).toEqual([['a', held.token]])
      await held.resign()
      const next = await waiting
      expect(next.candidate).toBe('b')
      expect(next.token).toBeGreaterThan(held.token)
      expect(overlaps).toEqual([])
    } finally {
      dying.close()
      await ea.close()
      await a.close()
    }
  }, 30_000)
})

describe('local: holder crash', () => {
  // A lease long enough that "before it would have ended" cannot be met by the lease running out.
  const LONG = 20_000

  it('kill -9 of a holder: the hub sees its process is dead and frees its grant at once; the waiter wins long before the lease would have ended', async () => {
    const dir = newDir()
    await peer('crash', dir) // the hub
    const a = await peer('crash', dir)
    const b = await peer('crash', dir)
    const res = 'faults/holder-crash'
    const askedAt = performance.now()
    const got = await a.backend.acquire({
      resource: res,
      candidate: 'a',
      tickets: 1,
      leaseMs: LONG,
      metadata: null,
    })
    expect(got.acquired).toBe(true)
    const eb = new Election(b.backend, res, { leaseMs: LONG, id: 'b' })
    eb.on('error', () => {})
    elections.push(eb)
    const waiting = eb.campaign()
    await sleep(200)
    const killedAt = performance.now()
    await a.kill()
    const next = await waiting
    const wonAt = performance.now()
    expect(next.candidate).toBe('b')
    expect(next.token).toBeGreaterThan(got.acquired ? got.token : 0)
    expect(wonAt).toBeLessThan(askedAt + LONG)
    console.log(
      `[local] holder crash: waiter holds ${(wonAt - killedAt).toFixed(1)} ms after kill -9 (lease ${LONG} ms)`,
    )
  }, 60_000)

  it('a live process whose socket closes keeps its grant until its lease ends (a closed socket is not a death)', async () => {
    const dir = newDir()
    await peer('reset', dir) // the hub
    const b = await peer('reset', dir)
    const res = 'faults/socket-reset'
    const lease = 3_000
    const startedAt = performance.now()
    const { raw, lines } = rawClient(join(dir, 'reset.sock'), res, lease)
    try {
      const answer = JSON.parse((await lines.next()).value as string) as { acquired: boolean }
      expect(answer.acquired).toBe(true)
      expect((await lines.next()).value).toBe('dropped')
      const eb = new Election(b.backend, res, { leaseMs: lease, id: 'b' })
      eb.on('error', () => {})
      elections.push(eb)
      const next = await eb.campaign()
      // The hub granted raw's lease after we started it, so it ran at least this long.
      expect(performance.now()).toBeGreaterThanOrEqual(startedAt + lease)
      expect(next.candidate).toBe('b')
      expect(raw.exitCode).toBe(null) // alive all along
    } finally {
      raw.kill('SIGKILL')
    }
  }, 30_000)
})

describe('local: a handle whose connection closed holding a grant', () => {
  it('is still named to the next hub after a later, empty connection of it closed: after kill -9 of the hub, a waiter is not granted while that grant may run', async () => {
    const dir = newDir()
    const hub = await peer('twice', dir)
    const b = await peer('twice', dir)
    const res = 'faults/closed-twice'
    // Long enough that starting raw (under tsx) and the takeover take a fraction of it.
    const lease = 8_000
    const startedAt = performance.now()
    // raw holds, cuts its socket (the hub keeps the grant: raw lives), then connects again
    // under the same handle and cuts that one too, having re-registered nothing.
    const { raw, lines } = rawClient(join(dir, 'twice.sock'), res, lease, true)
    try {
      const answer = JSON.parse((await lines.next()).value as string) as { acquired: boolean }
      expect(answer.acquired).toBe(true)
      expect((await lines.next()).value).toBe('dropped')
      expect((await lines.next()).value).toBe('dropped again')
      await hub.kill()
      const eb = new Election(b.backend, res, { leaseMs: lease, id: 'b' })
      eb.on('error', () => {})
      elections.push(eb)
      const killedAt = performance.now()
      await eb.campaign()
      // raw may act on its grant until its lease ends: the next hub must not end its wait early.
      const wonAt = performance.now()
      console.log(
        `[local] closed twice: raw answered, cut twice, hub killed ${(killedAt - startedAt).toFixed(0)} ms after raw started; b won ${(wonAt - startedAt).toFixed(0)} ms after (lease ${lease} ms)`,
      )
      expect(wonAt).toBeGreaterThanOrEqual(startedAt + lease)
      expect(raw.exitCode).toBe(null) // alive all along
    } finally {
      raw.kill('SIGKILL')
    }
  }, 40_000)
})

describe('local: namespaces', () => {
  it('two apps with different names on one host never meet: each has its own hub and leader', async () => {
    const dir = newDir()
    const one = await peer('app-one', dir)
    const two = await peer('app-two', dir)
    expect(await one.isHub()).toBe(true)
    expect(await two.isHub()).toBe(true)
    const t1 = await election(one.backend, 'faults/shared-name', 'one').campaign()
    const t2 = await election(two.backend, 'faults/shared-name', 'two').campaign()
    expect(t1.active && t2.active).toBe(true)
  }, 30_000)

  it("a second user cannot connect to the first user's hub, and its own default directory is its own", async () => {
    const user = unprivilegedUser()
    if (!user) throw new Error('this test runs as root, to start a process as another user')
    const dir = newDir()
    const hub = await peer('private', dir)
    expect(await hub.isHub()).toBe(true)
    const socket = join(dir, 'private.sock')
    const script = `require('net').connect(${JSON.stringify(socket)}).on('connect', () => { console.log('connected'); process.exit(0) }).on('error', (e) => { console.log(e.code); process.exit(0) })`
    const result = spawnSync(process.execPath, ['-e', script], {
      uid: user.uid,
      gid: user.gid,
      encoding: 'utf8',
      cwd: '/',
    })
    expect(result.stdout.trim()).toBe('EACCES')
    // The directory is checked: owned by someone else, or open to others, it is refused.
    const other = mkdtempSync(join(tmpdir(), 'conclave-other-'))
    try {
      chownSync(other, user.uid, user.gid)
      expect(() => localBackend({ name: 'x', dir: other })).toThrow(OptionsError)
      expect(() => localBackend({ name: 'x', dir: other })).toThrow(/owned by uid/)
      chownSync(other, 0, 0)
      chmodSync(other, 0o755)
      expect(() => localBackend({ name: 'x', dir: other })).toThrow(/mode 755/)
    } finally {
      rmSync(other, { recursive: true, force: true })
    }
    // Each user's default directory is its own (namespaced by uid).
    if (!process.env.XDG_RUNTIME_DIR) expect(defaultDir()).toBe(join(tmpdir(), 'conclave-0'))
  }, 30_000)
})

describe('local: inside node:cluster workers', () => {
  it('binds the lock and the socket itself (not shared through the primary, as PM2 cluster mode would): one hub, one holder', async () => {
    const dir = newDir()
    const app = fileURLToPath(new URL('./cluster-app.ts', import.meta.url))
    const out = execFileSync(process.execPath, ['--import', 'tsx', app, dir, '3'], {
      encoding: 'utf8',
      timeout: 30_000,
    })
    const results = JSON.parse(out) as { hub: boolean; acquired: boolean }[]
    expect(results).toHaveLength(3)
    expect(results.filter((r) => r.hub)).toHaveLength(1)
    expect(results.filter((r) => r.acquired)).toHaveLength(1)
  }, 40_000)
})
