// A switchable TCP path, the stand-in for a virtual IP or a DNS name moved at failover: clients
// connect to 127.0.0.1:<switch.port>, the switch forwards to its current target, and
// switchTo(port) moves it; connections made before the move are reset, as a moved VIP leaves
// them dead. No vitest imports: chaos and benchmark scripts use it too.
import { connect, createServer, type Server, type Socket } from 'node:net'

export interface TcpSwitch extends AsyncDisposable {
  readonly port: number
  /** Where new connections go now. */
  readonly targetPort: number
  /** New connections go to targetPort from now on; every current one is reset. */
  switchTo(targetPort: number): void
  close(): Promise<void>
}

class TcpSwitchImpl implements TcpSwitch {
  port = 0
  private readonly pairs = new Set<[Socket, Socket]>()
  private readonly server: Server
  private closing: Promise<void> | undefined

  constructor(public targetPort: number) {
    this.server = createServer({ allowHalfOpen: false }, (client) => this.accept(client))
    this.server.on('error', () => undefined)
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen({ host: '127.0.0.1', port: 0 }, () => resolve())
    })
    const address = this.server.address()
    if (address === null || typeof address === 'string') throw new Error('switch: no TCP address')
    this.port = address.port
  }

  private accept(client: Socket): void {
    client.on('error', () => undefined)
    if (this.closing) return void client.resetAndDestroy()
    const upstream = connect({ host: '127.0.0.1', port: this.targetPort })
    upstream.on('error', () => undefined)
    client.setNoDelay(true)
    upstream.setNoDelay(true)
    const pair: [Socket, Socket] = [client, upstream]
    this.pairs.add(pair)
    const end = () => {
      this.pairs.delete(pair)
      if (!client.destroyed) client.resetAndDestroy()
      if (!upstream.destroyed) upstream.destroy()
    }
    client.pipe(upstream)
    upstream.pipe(client)
    client.on('close', end)
    upstream.on('close', end)
  }

  switchTo(targetPort: number): void {
    this.targetPort = targetPort
    for (const [client, upstream] of [...this.pairs]) {
      if (!client.destroyed) client.resetAndDestroy()
      upstream.destroy()
    }
    this.pairs.clear()
  }

  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      this.switchTo(this.targetPort)
      this.server.close(() => resolve())
    })
    return this.closing
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }
}

/** Starts a switchable path on 127.0.0.1 (ephemeral port) to 127.0.0.1:targetPort. */
export async function startSwitch(targetPort: number): Promise<TcpSwitch> {
  const s = new TcpSwitchImpl(targetPort)
  await s.listen()
  return s
}
