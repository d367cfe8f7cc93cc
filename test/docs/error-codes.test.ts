// Every error and warning code the source can produce has a row in the README's code table.
import { readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { expect, it } from 'vitest'

const root = new URL('../../', import.meta.url).pathname

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? sources(join(dir, entry.name))
      : /\.(ts|lua|sql)$/.test(entry.name)
        ? [join(dir, entry.name)]
        : [],
  )
}

it('documents every code in the README table', () => {
  const codes = new Set<string>()
  for (const file of sources(join(root, 'src'))) {
    for (const match of readFileSync(file, 'utf8').matchAll(
      /['"`]((?:ERR_)?CONCLAVE_[A-Z0-9_]+)['"`]/g,
    ))
      codes.add(match[1]!)
  }
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  const rows = new Set(
    [...readme.matchAll(/^\|\s*`((?:ERR_)?CONCLAVE_[A-Z0-9_]+)`\s*\|/gm)].map((m) => m[1]!),
  )
  expect(codes.size).toBeGreaterThan(20) // the scan found the catalogue, not nothing
  expect([...codes].filter((code) => !rows.has(code)).sort()).toEqual([])
  expect([...rows].filter((code) => !codes.has(code)).sort()).toEqual([])
})
