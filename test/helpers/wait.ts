// Waiting in tests: a plain sleep, and polling a condition with a bound and a clear message.
export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

export async function until(
  check: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: string,
): Promise<void> {
  const end = performance.now() + timeoutMs
  while (performance.now() < end) {
    if (await check()) return
    await sleep(10)
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
}
