// A TCP fault proxy the tests own: clients connect to 127.0.0.1:<proxy.port>, the proxy forwards
// to the target, and the test cuts, black-holes, delays and restores the path. No vitest imports:
// chaos and benchmark scripts use it too.
//
// Semantics:
// - cut({ mode: 'reset' }) (the default): every current connection is reset (RST to the client,
//   the upstream side closed) and every new connection is accepted and reset at once, as a
//   server that is down or a firewall that rejects would. Connections reset stay dropped.
// - cut({ mode: 'blackhole' }): a hung path (a partition, a dead host, a half-open TCP peer).
//   Current connections stay open but no byte moves in either direction; new connections are
//   accepted (the client sees a successful connect) but are not connected upstream and get no
//   byte either. Bytes sent meanwhile are held (in the kernel's socket buffers and ours), not lost.
// - restore(): forward again. After a blackhole the held bytes are delivered in order and the
//   held new connections are connected upstream, as when a partition heals and TCP retransmits;
//   whatever the client gave up on meanwhile (its own timeouts) is its business. To drop the
//   black-holed connections instead, call cut({ mode: 'reset' }) before restore().
// - delay(ms): from now on every chunk, in both directions, is delivered ms later (order kept).
//   delay(0) removes it.
import { createServer, connect, type Server, type Socket } from 'node:net'

export type CutMode = 'reset' | 'blackhole'

export interface StartProxyOptions {
  targetHost?: string
  targetPort: number
  /** Where the proxy listens (default 127.0.0.1). */
  host?: string
  /** Port to listen on (default: ephemeral). */
  port?: number
}

export interface FaultProxy extends AsyncDisposable {
  readonly host: string
  readonly port: number
  readonly targetHost: string
  readonly targetPort: number
  /** 'open' while forwarding, else the mode of the current cut. */
  readonly state: 'open' | CutMode
  /** Client connections open right now (including held and black-holed ones). */
  readonly connections: number
  /** Client connections accepted since start (including the ones reset at once). */
  readonly totalConnections: number
  /** Current added latency per chunk, in ms. */
  readonly latencyMs: number
  cut(options?: { mode?: CutMode }): void
  restore(): void
  delay(ms: number): void
  /** Destroys every connection and stops listening. Idempotent. */
  close(): Promise<void>
}

interface Direction {
  from: Socket
  to: Socket
  /** Chunks waiting for their due time or for the path to open; null marks the end of stream. */
  queue: { chunk: Buffer | null; due: number }[]
  timer: NodeJS.Timeout | undefined
}

class Link {
  readonly up: Direction
  readonly down: Direction
  private closed = false
  upstreamConnected = false

  constructor(
    readonly client: Socket,
    readonly upstream: Socket,
    private readonly proxy: FaultProxyImpl,
  ) {
    this.up = { from: client, to: upstream, queue: [], timer: undefined }
    this.down = { from: upstream, to: client, queue: [], timer: undefined }
    for (const dir of [this.up, this.down]) {
      dir.from.on('data', (chunk: Buffer) => this.enqueue(dir, chunk))
      // A FIN travels like data (after the chunks before it); both sockets are half-open capable.
      dir.from.on('end', () => this.enqueue(dir, null))
      // A reset (or a refused upstream) is passed on as a reset.
      dir.from.on('error', () => this.destroy(true))
      dir.from.on('close', () => {
        if (this.client.destroyed && this.upstream.destroyed) this.destroy(false)
      })
    }
    this.upstream.on('connect', () => {
      this.upstreamConnected = true
      this.pump(this.up)
    })
  }

  private enqueue(dir: Direction, chunk: Buffer | null): void {
    if (this.closed) return
    dir.queue.push({ chunk, due: Date.now() + this.proxy.latencyMs })
    this.pump(dir)
  }

  /** Delivers due chunks while the path is open; reschedules itself for the next due one. */
  pump(dir: Direction): void {
    if (this.closed || this.proxy.state !== 'open') return
    if (dir === this.up && !this.upstreamConnected) return
    clearTimeout(dir.timer)
    dir.timer = undefined
    const now = Date.now()
    while (dir.queue.length > 0) {
      const next = dir.queue[0]!
      if (next.due > now) {
        dir.timer = setTimeout(() => this.pump(dir), next.due - now)
        return
      }
      dir.queue.shift()
      if (next.chunk === null) {
        dir.to.end()
      } else if (!dir.to.write(next.chunk)) {
        // Back-pressure: stop reading the source until the destination drains.
        dir.from.pause()
        dir.to.once('drain', () => {
          if (this.proxy.state === 'open') dir.from.resume()
        })
      }
    }
  }

  /** Stop reading both sides (the bytes wait in the kernel buffers). */
  hold(): void {
    this.client.pause()
    this.upstream.pause()
    clearTimeout(this.up.timer)
    clearTimeout(this.down.timer)
  }

  release(): void {
    this.client.resume()
    this.upstream.resume()
    this.pump(this.up)
    this.pump(this.down)
  }

  destroy(reset: boolean): void {
    if (this.closed) return
    this.closed = true
    clearTimeout(this.up.timer)
    clearTimeout(this.down.timer)
    if (reset && !this.client.destroyed) this.client.resetAndDestroy()
    else this.client.destroy()
    if (reset && !this.upstream.destroyed && this.upstream.readyState === 'open') {
      this.upstream.resetAndDestroy()
    }
    this.upstream.destroy()
    this.proxy.forget(this)
  }
}

class FaultProxyImpl implements FaultProxy {
  readonly host: string
  port = 0
  readonly targetHost: string
  readonly targetPort: number
  state: 'open' | CutMode = 'open'
  latencyMs = 0
  totalConnections = 0
  private readonly links = new Set<Link>()
  /** Connections accepted during a blackhole, not connected upstream yet. */
  private readonly pending = new Set<Socket>()
  private readonly server: Server
  private closing: Promise<void> | undefined

  constructor(options: StartProxyOptions) {
    this.host = options.host ?? '127.0.0.1'
    this.targetHost = options.targetHost ?? '127.0.0.1'
    this.targetPort = options.targetPort
    this.server = createServer({ pauseOnConnect: true, allowHalfOpen: true }, (socket) =>
      this.accept(socket),
    )
    this.server.on('error', () => undefined)
  }

  async listen(port: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen({ host: this.host, port }, () => {
        this.server.removeListener('error', reject)
        resolve()
      })
    })
    const address = this.server.address()
    if (address === null || typeof address === 'string') throw new Error('proxy: no TCP address')
    this.port = address.port
  }

  get connections(): number {
    return this.links.size + this.pending.size
  }

  private accept(client: Socket): void {
    this.totalConnections++
    client.setNoDelay(true)
    client.on('error', () => undefined)
    if (this.closing || this.state === 'reset') {
      client.resetAndDestroy()
      return
    }
    if (this.state === 'blackhole') {
      // Accepted, but nothing behind it until restore(); bytes it sends stay in the kernel.
      this.pending.add(client)
      client.once('close', () => this.pending.delete(client))
      return
    }
    this.link(client)
  }

  private link(client: Socket): void {
    const upstream = connect({ host: this.targetHost, port: this.targetPort, allowHalfOpen: true })
    upstream.setNoDelay(true)
    const link = new Link(client, upstream, this)
    this.links.add(link)
    client.resume()
  }

  forget(link: Link): void {
    this.links.delete(link)
  }

  cut(options: { mode?: CutMode } = {}): void {
    const mode = options.mode ?? 'reset'
    this.state = mode
    if (mode === 'reset') {
      for (const link of [...this.links]) link.destroy(true)
      for (const client of [...this.pending]) if (!client.destroyed) client.resetAndDestroy()
      this.pending.clear()
    } else {
      for (const link of this.links) link.hold()
    }
  }

  restore(): void {
    if (this.closing) return
    this.state = 'open'
    for (const link of this.links) link.release()
    const held = [...this.pending]
    this.pending.clear()
    for (const client of held) {
      if (!client.destroyed) this.link(client)
    }
  }

  delay(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`proxy.delay: bad ms ${ms}`)
    this.latencyMs = ms
  }

  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      for (const link of [...this.links]) link.destroy(false)
      for (const client of this.pending) client.destroy()
      this.pending.clear()
      this.server.close(() => resolve())
    })
    return this.closing
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }
}

/** Starts a fault proxy on 127.0.0.1 (ephemeral port) in front of targetHost:targetPort. */
export async function startProxy(options: StartProxyOptions): Promise<FaultProxy> {
  const proxy = new FaultProxyImpl(options)
  await proxy.listen(options.port ?? 0)
  return proxy
}
