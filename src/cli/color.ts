/**
 * Color for people, plain text for scripts: the CLI colors its output only on a terminal, never
 * when NO_COLOR is set (https://no-color.org), and always when FORCE_COLOR is set (to anything
 * but `0` or `false`) without NO_COLOR.
 */

/** The styles the CLI uses; each returns its text unchanged when color is off. */
export interface Palette {
  readonly enabled: boolean
  readonly bold: (text: string) => string
  readonly dim: (text: string) => string
  readonly green: (text: string) => string
  readonly yellow: (text: string) => string
  readonly red: (text: string) => string
}

/** Whether output to `stream` gets color, by the rule above. */
export function colorEnabled(
  stream: { isTTY?: boolean },
  env: NodeJS.ProcessEnv = process.env,
): boolean {
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false
  const force = env.FORCE_COLOR
  if (force !== undefined && force !== '') return force !== '0' && force !== 'false'
  return stream.isTTY === true && env.TERM !== 'dumb'
}

/** The palette for `stream` (process.stdout or process.stderr). */
export function palette(
  stream: { isTTY?: boolean },
  env: NodeJS.ProcessEnv = process.env,
): Palette {
  const enabled = colorEnabled(stream, env)
  const style = (open: number, close: number) => (text: string) =>
    enabled ? `\x1b[${open}m${text}\x1b[${close}m` : text
  return {
    enabled,
    bold: style(1, 22),
    dim: style(2, 22),
    green: style(32, 39),
    yellow: style(33, 39),
    red: style(31, 39),
  }
}
