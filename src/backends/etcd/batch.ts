/**
 * Transactions of the etcd backend on different resources, sent together: the asks (and
 * deletes) that come within one turn of the event loop go out as one etcd transaction holding
 * each as a nested transaction, with its own compares, so each still succeeds or fails on its
 * own. 10,000 campaigns started at once then cost about 80 raft writes instead of 10,000, and a
 * lone ask goes out alone, as before, one turn later.
 *
 * What makes it safe:
 * - one item per resource in flight: every key created in one transaction gets the same create
 *   revision (the token), which is only unique within a resource; a delete and a create of one
 *   resource in one transaction would leave the watch's copy, offered at the transaction's
 *   revision, without the delete; and asks of one resource go to etcd in the order they came.
 *   A second item of a resource waits for the first one's answer.
 * - one group per batch (the lease the items write on): etcd refuses a whole transaction that
 *   puts on a lease it no longer has, which must only say "gone" of that one lease.
 * - every item is a transaction that is safe to send again (see the backend's #call), so a batch
 *   that etcd refuses as too big is simply sent again in smaller pieces.
 */

/** etcd's default --max-txn-ops is 128, counted per level: 126 nested asks of 2 ops each fit. */
export const MAX_BATCH = 126

/**
 * Batches out at once; what comes meanwhile waits and goes in the next ones. A few big
 * transactions keep etcd busy (it commits concurrent ones together), and each is answered soon
 * after it is sent: 80 sent at once would each wait behind all the others.
 */
export const MAX_BATCHES_IN_FLIGHT = 4

/** One transaction waiting for its batch. */
interface Pending<T, R> {
  readonly item: T
  readonly resource: string
  readonly group: string
  resolve(result: R): void
  reject(error: unknown): void
}

/** Collects items for one turn of the event loop and sends them in batches. */
export class Batches<T, R> {
  #pending: Pending<T, R>[] = []
  #scheduled = false
  /** Lowered when etcd refuses a batch as too big (a server with a lower --max-txn-ops). */
  #max = MAX_BATCH
  #inFlight = 0
  /** Resources with an item in flight. */
  readonly #busy = new Set<string>()

  /**
   * @param send sends one batch (items of one group, on distinct resources), results in order
   * @param tooBig says a batch's error is etcd refusing its size (then it is sent in pieces)
   */
  constructor(
    readonly send: (items: T[]) => Promise<R[]>,
    readonly tooBig: (error: unknown) => boolean,
  ) {}

  /** Sends `item` (a transaction on `resource`, in `group`) with the others of this turn. */
  submit(item: T, resource: string, group: string): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.#pending.push({ item, resource, group, resolve, reject })
      this.#schedule()
    })
  }

  /** A flush at the end of this turn, if a batch may go out. */
  #schedule(): void {
    if (this.#scheduled || this.#inFlight >= MAX_BATCHES_IN_FLIGHT || !this.#pending.length) return
    this.#scheduled = true
    setImmediate(() => {
      this.#scheduled = false
      this.#flush()
    })
  }

  #flush(): void {
    const free = MAX_BATCHES_IN_FLIGHT - this.#inFlight
    // In arrival order, into at most `free` batches, each item in the first one of its group
    // with room. An item of a resource that has one in flight (or in this flush) waits for its
    // answer: asks of one resource go to etcd in the order they came (first come, first
    // served), and never race each other's compares.
    const batches: { group: string; items: Pending<T, R>[] }[] = []
    const left: Pending<T, R>[] = []
    let full = 0
    let i = 0
    for (; i < this.#pending.length && full < free; i++) {
      const p = this.#pending[i]!
      let batch = this.#busy.has(p.resource)
        ? undefined
        : batches.find((b) => b.group === p.group && b.items.length < this.#max)
      if (!batch && !this.#busy.has(p.resource) && batches.length < free) {
        batches.push((batch = { group: p.group, items: [] }))
      }
      if (!batch) {
        left.push(p)
        continue
      }
      this.#busy.add(p.resource)
      batch.items.push(p)
      if (batch.items.length === this.#max) full++
    }
    this.#pending = i === this.#pending.length ? left : left.concat(this.#pending.slice(i))
    for (const { items } of batches) {
      this.#inFlight++
      void this.#run(items).finally(() => {
        this.#inFlight--
        for (const p of items) this.#busy.delete(p.resource)
        this.#schedule()
      })
    }
  }

  async #run(batch: Pending<T, R>[]): Promise<void> {
    let results: R[]
    try {
      results = await this.send(batch.map((p) => p.item))
    } catch (error) {
      if (batch.length > 1 && this.tooBig(error)) {
        this.#max = Math.max(1, Math.min(this.#max, Math.floor(batch.length / 2)))
        const half = Math.ceil(batch.length / 2)
        await Promise.all([this.#run(batch.slice(0, half)), this.#run(batch.slice(half))])
        return
      }
      for (const p of batch) p.reject(error)
      return
    }
    batch.forEach((p, i) => p.resolve(results[i]!))
  }
}
