// The Lua scripts: real files with a header naming KEYS and ARGV, shared pieces in scripts/lib/
// pulled in by `--@include`, and shipped as generated modules that must match their .lua files.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'

interface GenAssets {
  SCRIPT_DIRS: string[]
  expandIncludes(file: string): string
  generate(options: { root?: string; check?: boolean; dist?: string }): {
    stale: string[]
    orphans: string[]
  }
}

const root = fileURLToPath(new URL('../..', import.meta.url))
const scriptsDir = join(root, 'src/backends/redis/scripts')
// A computed specifier: the generator is plain JavaScript run by node, without declarations.
const gen = (await import(new URL('scripts/gen-assets.js', `file://${root}/`).href)) as GenAssets
const scripts = readdirSync(scriptsDir).filter((name) => name.endsWith('.lua'))

const temps: string[] = []
afterAll(() => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true })
})

describe('the generated script modules', () => {
  it('are up to date with the .lua files (run `node scripts/gen-assets.js` after an edit)', () => {
    expect(gen.SCRIPT_DIRS).toContain('src/backends/redis/scripts')
    expect(gen.generate({ root, check: true })).toEqual({ stale: [], orphans: [] })
  })

  it.each(scripts)('export %s with its includes expanded and its header first', async (name) => {
    const module = (await import(join(scriptsDir, `${name}.js`))) as { default: string }
    expect(module.default).toBe(gen.expandIncludes(join(scriptsDir, name)))
    expect(module.default).not.toMatch(/^--@include/m)
    // The header: the comment lines the file starts with, before any include.
    const lines = readFileSync(join(scriptsDir, name), 'utf8').split('\n')
    const header = lines
      .slice(
        0,
        lines.findIndex((l) => !/^--(?!@)/.test(l)),
      )
      .join('\n')
    expect(header).toMatch(/^-- [\w ]+: /)
    expect(header).toMatch(/^-- KEYS\[/m)
    // Every argument described, or said to be none.
    expect(header).toMatch(/^-- ARGV(\[|: none)/m)
  })

  it('define each shared function once, from lib/grants.lua', async () => {
    const lib = readFileSync(join(scriptsDir, 'lib/grants.lua'), 'utf8')
    const shared = [...lib.matchAll(/^local function (\w+)/gm)].map((m) => m[1]!)
    expect(shared).toEqual(expect.arrayContaining(['pruneExpired', 'listHolders']))
    for (const name of ['acquire', 'holders', 'release', 'renew']) {
      const text = gen.expandIncludes(join(scriptsDir, `${name}.lua`))
      for (const fn of shared) {
        expect(text.split(`local function ${fn}(`).length - 1, `${name}: ${fn}`).toBe(1)
      }
    }
  })
})

describe('@include', () => {
  const tree = (files: Record<string, string>) => {
    const dir = mkdtempSync(join(tmpdir(), 'conclave-include-'))
    temps.push(dir)
    for (const [path, text] of Object.entries(files)) {
      mkdirSync(join(dir, path, '..'), { recursive: true })
      writeFileSync(join(dir, path), text)
    }
    return dir
  }

  it('replaces the line by the file (relative to the includer), nested, each file once', () => {
    const dir = tree({
      'main.lua': '-- main\n--@include "lib/a.lua"\n--@include "lib/b.lua"\nreturn 1\n',
      'lib/a.lua': 'local a = 1\n--@include "b.lua"\n',
      'lib/b.lua': 'local b = 2\n',
    })
    expect(gen.expandIncludes(join(dir, 'main.lua'))).toBe(
      '-- main\nlocal a = 1\nlocal b = 2\n-- (@include "lib/b.lua": included above)\nreturn 1\n',
    )
  })

  it('refuses a cycle and a missing file, naming the includer', () => {
    const dir = tree({
      'loop.lua': '--@include "lib/x.lua"\n',
      'lib/x.lua': '--@include "../loop.lua"\n',
      'missing.lua': '--@include "lib/none.lua"\n',
    })
    expect(() => gen.expandIncludes(join(dir, 'loop.lua'))).toThrow(/x\.lua: .*a cycle/)
    expect(() => gen.expandIncludes(join(dir, 'missing.lua'))).toThrow(
      /missing\.lua: @include "lib\/none\.lua": no such file/,
    )
  })

  it('finds a stale module and an orphan, writes (with its built twin) and removes them', async () => {
    const dir = tree({
      'src/backends/redis/scripts/one.lua': '-- one\n--@include "lib/l.lua"\n',
      'src/backends/redis/scripts/lib/l.lua': 'return 1\n',
      'src/backends/redis/scripts/gone.lua.ts': 'export default ""\n',
      'dist/backends/redis/scripts/one.lua.js': 'compiled from the stale text\n',
    })
    const found = {
      stale: ['src/backends/redis/scripts/one.lua.ts'],
      orphans: ['src/backends/redis/scripts/gone.lua.ts'],
    }
    expect(gen.generate({ root: dir, check: true })).toEqual(found)
    expect(gen.generate({ root: dir, dist: 'dist' })).toEqual(found)
    // The build's twin is JavaScript with the new text (tsc compiled the stale one before).
    const twin = (await import(join(dir, 'dist/backends/redis/scripts/one.lua.js'))) as {
      default: string
    }
    expect(twin.default).toBe('-- one\nreturn 1\n')
    expect(readdirSync(join(dir, 'src/backends/redis/scripts')).sort()).toEqual([
      'lib',
      'one.lua',
      'one.lua.ts',
    ])
    expect(gen.generate({ root: dir, check: true })).toEqual({ stale: [], orphans: [] })
  })
})
