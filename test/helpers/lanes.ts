// Lanes for the independent cases of one file run with describe.concurrent: a case waits for the
// cases queued before it in its lane, so at most `count` run at once and the cases of one lane
// (those sharing a server, or global state such as the cluster hub) never overlap. A case's
// timeout runs while it waits: it must cover the cases ahead of it in its lane.

export interface Lanes {
  /**
   * A lane for one more case, counted in: `pinned` if given, else the lane given the fewest
   * cases so far (the last of those on a tie). Call it when the case is defined.
   */
  pick: (pinned?: number) => number
  /** Runs `fn` once the cases queued before it in `lane` have settled. */
  run: <T>(lane: number, fn: () => Promise<T>) => Promise<T>
}

/** `count` lanes. */
export function lanes(count: number): Lanes {
  const tails: Promise<void>[] = Array.from({ length: count }, () => Promise.resolve())
  const given: number[] = Array.from({ length: count }, () => 0)
  const check = (lane: number) => {
    if (!Number.isInteger(lane) || lane < 0 || lane >= count) {
      throw new RangeError(`lanes: lane ${lane} is not an integer from 0 to ${count - 1}`)
    }
  }
  return {
    pick: (pinned) => {
      let lane = 0
      if (pinned === undefined) {
        for (let i = 0; i < count; i++) if (given[i]! <= given[lane]!) lane = i
      } else {
        check(pinned)
        lane = pinned
      }
      given[lane]!++
      return lane
    },
    run: (lane, fn) => {
      check(lane)
      const result = tails[lane]!.then(fn)
      tails[lane] = result.then(
        () => {},
        () => {},
      )
      return result
    },
  }
}
