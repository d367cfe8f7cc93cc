// The SQL ships as generated modules (scripts/gen-assets.js): one per .sql file, exporting its
// text, and an index of the migrations in version order; they must match the files.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import { migrations } from '../../src/backends/postgres/layout.js'
import { latestSchemaVersion } from '../../src/backends/postgres/migrate.js'

interface GenAssets {
  SQL_DIRS: string[]
  MIGRATIONS_DIR: string
  generate(options: { root?: string; check?: boolean; dist?: string }): {
    stale: string[]
    orphans: string[]
  }
}

const root = fileURLToPath(new URL('../..', import.meta.url))
const sqlDir = join(root, 'src/backends/postgres/sql')
// A computed specifier: the generator is plain JavaScript run by node, without declarations.
const gen = (await import(new URL('scripts/gen-assets.js', `file://${root}/`).href)) as GenAssets
const files = [
  ...readdirSync(sqlDir).filter((name) => name.endsWith('.sql')),
  ...readdirSync(join(sqlDir, 'migrations'))
    .filter((name) => name.endsWith('.sql'))
    .map((name) => `migrations/${name}`),
]

const temps: string[] = []
afterAll(() => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true })
})

describe('the generated SQL modules', () => {
  it('are up to date with the .sql files (run `node scripts/gen-assets.js` after an edit)', () => {
    expect(gen.SQL_DIRS).toEqual([
      'src/backends/postgres/sql',
      'src/backends/postgres/sql/migrations',
    ])
    expect(gen.generate({ root, check: true })).toEqual({ stale: [], orphans: [] })
  })

  it.each(files)('export %s as it is', async (name) => {
    const module = (await import(join(sqlDir, `${name}.js`))) as { default: string }
    expect(module.default).toBe(readFileSync(join(sqlDir, name), 'utf8'))
  })

  it('list every migration of the folder, in version order, with its text', () => {
    const onDisk = files
      .filter((f) => f.startsWith('migrations/'))
      .map((f) => /^migrations\/(\d+)_(\w+)\.sql$/.exec(f)!)
      .map((m) => ({
        version: Number(m[1]),
        name: m[2],
        text: readFileSync(join(sqlDir, m[0]), 'utf8'),
      }))
      .sort((a, b) => a.version - b.version)
    expect(onDisk.length).toBeGreaterThanOrEqual(2)
    expect(migrations()).toEqual(onDisk)
    expect(latestSchemaVersion()).toBe(onDisk.at(-1)!.version)
  })
})

describe('gen-assets on SQL', () => {
  const tree = (entries: Record<string, string>) => {
    const dir = mkdtempSync(join(tmpdir(), 'conclave-sql-'))
    temps.push(dir)
    for (const [path, text] of Object.entries(entries)) {
      mkdirSync(join(dir, path, '..'), { recursive: true })
      writeFileSync(join(dir, path), text)
    }
    return dir
  }
  const base = 'src/backends/postgres/sql'

  it('finds stale modules and an orphan, writes (with built twins) and removes them', async () => {
    const dir = tree({
      [`${base}/one.sql`]: 'SELECT 1\n',
      [`${base}/gone.sql.ts`]: 'export default ""\n',
      [`${base}/migrations/010_later.sql`]: 'CREATE TABLE {schema}.later ()\n',
      [`${base}/migrations/002_first.sql`]: 'CREATE TABLE {schema}.first ()\n',
      'dist/backends/postgres/sql/migrations/index.js': 'compiled from the stale text\n',
    })
    const found = {
      stale: [
        `${base}/one.sql.ts`,
        `${base}/migrations/002_first.sql.ts`,
        `${base}/migrations/010_later.sql.ts`,
        `${base}/migrations/index.ts`,
      ],
      orphans: [`${base}/gone.sql.ts`],
    }
    expect(gen.generate({ root: dir, check: true })).toEqual(found)
    expect(gen.generate({ root: dir, dist: 'dist' })).toEqual(found)
    expect(readdirSync(join(dir, base)).sort()).toEqual(['migrations', 'one.sql', 'one.sql.ts'])
    expect(gen.generate({ root: dir, check: true })).toEqual({ stale: [], orphans: [] })
    // The build's twin of the index is JavaScript, in version order (its imports are not built
    // here: the module text is what is checked).
    const twin = readFileSync(join(dir, 'dist/backends/postgres/sql/migrations/index.js'), 'utf8')
    expect(twin).not.toMatch(/: readonly/)
    expect(twin.indexOf("name: 'first'")).toBeLessThan(twin.indexOf("name: 'later'"))
    const index = readFileSync(join(dir, base, 'migrations/index.ts'), 'utf8')
    expect(index).toContain("import m2 from './002_first.sql.js'")
    expect(index).toContain("{ version: 10, name: 'later', text: m10 }")
  })

  it('refuses a migration misnamed or a version twice, naming the file', () => {
    const misnamed = tree({ [`${base}/migrations/first.sql`]: 'SELECT 1\n' })
    expect(() => gen.generate({ root: misnamed, check: true })).toThrow(
      /migrations\/first\.sql: a migration is named NNN_name\.sql/,
    )
    const twice = tree({
      [`${base}/migrations/001_a.sql`]: 'SELECT 1\n',
      [`${base}/migrations/01_b.sql`]: 'SELECT 2\n',
    })
    expect(() => gen.generate({ root: twice, check: true })).toThrow(/version 1 is/)
  })
})
