/**
 * Keepalives of the etcd backend's leases: one LeaseKeepAlive stream per member client, kept
 * open, with at most one keepalive per lease in flight on it. Whoever asks while one is out
 * shares the next one, written as soon as the answer comes: 10,000 acquires at once cost a
 * handful of keepalives on one stream instead of 10,000 streams.
 *
 * Each caller's keepalive is written after it asked, so the TTL etcd answers runs from a moment
 * after the caller's send time (the grant deadline's base). etcd answers a stream's requests in
 * order, one for each, so answers are matched first in, first out (and checked by lease id).
 */
import type { Namespace } from 'etcd3'

/** One caller waiting for a keepalive's answer (etcd's TTL in seconds, 0: the lease is gone). */
interface Ask {
  resolve(ttl: number): void
  reject(error: Error): void
}

/** Callers sharing one keepalive of one lease. */
interface Group {
  readonly id: string
  readonly asks: Ask[]
  /** Latest moment the answer may come before the stream counts as hung. */
  readonly until: number
}

type KeepAliveStream = Awaited<ReturnType<Namespace['leaseClient']['leaseKeepAlive']>>

interface Stream {
  readonly opening: Promise<KeepAliveStream>
  /** Written, not answered yet, oldest first. */
  readonly written: Group[]
  /** Per lease: the group that goes out when the one in flight is answered. */
  readonly next: Map<string, Group>
  timer: NodeJS.Timeout | undefined
  dead: boolean
}

/** The keepalive streams of one backend (one per member client). */
export class KeepAlives {
  readonly #streams = new Map<Namespace, Stream>()
  #closed = false

  /** One keepalive of lease `id` through `client`, written after this call: etcd's TTL (0: gone). */
  keepalive(client: Namespace, id: string, deadline: Date): Promise<number> {
    if (this.#closed) return Promise.reject(new Error('the keepalive streams are closed'))
    let stream = this.#streams.get(client)
    if (!stream || stream.dead) {
      stream = this.#open(client)
      this.#streams.set(client, stream)
    }
    const s = stream
    return new Promise<number>((resolve, reject) => {
      const ask = { resolve, reject }
      const queued = s.next.get(id)
      if (queued) return void queued.asks.push(ask)
      const group: Group = { id, asks: [ask], until: deadline.getTime() }
      if (s.written.some((g) => g.id === id)) s.next.set(id, group)
      else this.#write(s, group)
    })
  }

  /** Ends every stream (half-close: a cancel would make etcd3 reset the channel). */
  close(): void {
    this.#closed = true
    for (const stream of this.#streams.values())
      this.#fail(stream, new Error('the keepalive streams are closed'))
    this.#streams.clear()
  }

  #open(client: Namespace): Stream {
    const opening = client.leaseClient.leaseKeepAlive()
    const stream: Stream = { opening, written: [], next: new Map(), timer: undefined, dead: false }
    opening.then(
      (grpc) => {
        if (stream.dead) return void grpc.end()
        // Stays attached: a late error on this stream must never go unhandled.
        grpc.on('error', (error: Error) => this.#fail(stream, error))
        grpc.on('end', () => this.#fail(stream, new Error('the keepalive stream ended')))
        grpc.on('data', (response: { ID: string; TTL: string }) => this.#answer(stream, response))
      },
      (error: unknown) => this.#fail(stream, error as Error),
    )
    return stream
  }

  #write(stream: Stream, group: Group): void {
    stream.written.push(group)
    this.#arm(stream)
    stream.opening.then(
      (grpc) => {
        if (!stream.dead) grpc.write({ ID: group.id })
      },
      () => {},
    )
  }

  #answer(stream: Stream, response: { ID: string; TTL: string }): void {
    const group = stream.written.shift()
    if (!group) return
    if (String(response.ID) !== group.id) {
      stream.written.unshift(group)
      return this.#fail(
        stream,
        new Error(`keepalive answer for lease ${response.ID}, not ${group.id}`),
      )
    }
    const ttl = Number(response.TTL)
    for (const ask of group.asks) ask.resolve(ttl)
    const next = stream.next.get(group.id)
    if (next) {
      stream.next.delete(group.id)
      this.#write(stream, next)
    }
    this.#arm(stream)
  }

  /** A timer for the oldest unanswered keepalive: past its deadline the stream counts as hung. */
  #arm(stream: Stream): void {
    clearTimeout(stream.timer)
    stream.timer = undefined
    const oldest = stream.written[0]
    if (!oldest || stream.dead) return
    stream.timer = setTimeout(
      () => this.#fail(stream, new Error('no keepalive answer in time')),
      Math.max(1, oldest.until - Date.now()),
    )
    stream.timer.unref()
  }

  #fail(stream: Stream, error: Error): void {
    if (stream.dead) return
    stream.dead = true
    clearTimeout(stream.timer)
    for (const [client, s] of this.#streams) if (s === stream) this.#streams.delete(client)
    const groups = [...stream.written, ...stream.next.values()]
    stream.written.length = 0
    stream.next.clear()
    for (const group of groups) for (const ask of group.asks) ask.reject(error)
    stream.opening.then(
      (grpc) => grpc.end(),
      () => {},
    )
  }
}
