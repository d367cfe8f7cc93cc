// The catalogue (CODES and WARNING_CODES in src/errors.ts) and the README's code table agree:
// a row per code naming its class and whether it is final, every class exported from the
// package, and no code in the source that the catalogue does not know.
import { readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { expect, it } from 'vitest'
import * as agentEntry from '../../src/agent/index.js'
import {
  AgentError,
  CODES,
  type CodeEntry,
  StaleTokenError,
  WARNING_CODES,
} from '../../src/errors.js'
import * as fenceEntry from '../../src/fence/index.js'
import * as rootEntry from '../../src/index.js'

const root = new URL('../../', import.meta.url).pathname
const entries = Object.entries(CODES as Readonly<Record<string, CodeEntry>>)

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? sources(join(dir, entry.name))
      : /\.(ts|lua|sql|cjs)$/.test(entry.name)
        ? [join(dir, entry.name)]
        : [],
  )
}

/** The README's code table: code → its class and final columns. */
function table(): Map<string, { classes: string; final: boolean }> {
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  const rows = new Map<string, { classes: string; final: boolean }>()
  for (const m of readme.matchAll(
    /^\|\s*`((?:ERR_)?CONCLAVE_[A-Z0-9_]+)`\s*\|([^|]*)\|[^|]*\|([^|]*)\|\s*$/gm,
  ))
    rows.set(m[1]!, { classes: m[2]!.trim(), final: m[3]!.trim() === 'yes' })
  return rows
}

it('documents every code of the catalogue, and every warning code, in the README table', () => {
  const codes = [...entries.map(([code]) => code), ...WARNING_CODES]
  const rows = table()
  expect(entries.length).toBeGreaterThan(20) // the catalogue, not nothing
  expect(codes.filter((code) => !rows.has(code)).sort()).toEqual([])
  expect([...rows.keys()].filter((code) => !codes.includes(code)).sort()).toEqual([])
  for (const code of WARNING_CODES) expect(rows.get(code)?.classes, code).toBe('(warning)')
})

it('names each code’s class in its row, and marks exactly the final codes final', () => {
  const rows = table()
  for (const [code, entry] of entries) {
    const row = rows.get(code)!
    expect(row.classes, code).toContain(`\`${entry.class.name}\``)
    expect(row.final, code).toBe(entry.final === true)
  }
})

it('exports every class of the catalogue from the package, and the agent’s and fence’s from their subpaths', () => {
  const exported = (entry: Record<string, unknown>, cls: CodeEntry['class']) =>
    entry[cls.name] === cls
  for (const [code, entry] of entries) {
    expect(exported(rootEntry, entry.class), `${code} from conclave`).toBe(true)
    if (entry.class.prototype instanceof AgentError) {
      expect(exported(agentEntry, entry.class), `${code} from conclave/agent`).toBe(true)
    }
  }
  expect(exported(fenceEntry, StaleTokenError)).toBe(true)
  expect(agentEntry.AgentError).toBe(AgentError)
})

it('finds no code in the source outside the catalogue, and no error built from a bare code', () => {
  const known = new Set<string>([...entries.map(([code]) => code), ...WARNING_CODES])
  const unknown: string[] = []
  const raw: string[] = []
  for (const file of sources(join(root, 'src'))) {
    const text = readFileSync(file, 'utf8')
    for (const match of text.matchAll(/['"`]((?:ERR_)?CONCLAVE_[A-Z0-9_]+)['"`]/g))
      if (!known.has(match[1]!)) unknown.push(`${file.slice(root.length)}: ${match[1]}`)
    if (file.endsWith(join('src', 'errors.ts'))) continue
    for (const match of text.matchAll(/new (ConclaveError|AgentError)\(/g))
      raw.push(`${file.slice(root.length)}: ${match[0]}`)
  }
  expect(unknown).toEqual([])
  expect(raw).toEqual([])
})
