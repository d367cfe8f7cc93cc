// The TypeScript blocks of the README and docs/*.md, for the tests that type-check and run
// them. A block is ```ts or ```typescript; ```ts nocheck marks one left out on purpose (a
// fragment that cannot stand alone), see README Development.
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The repository's root folder. */
export const ROOT = fileURLToPath(new URL('..', import.meta.url))

/** One fenced TypeScript block: where it is, its info string's flags, its text. */
export interface Snippet {
  /** Repository-relative path of the Markdown file. */
  file: string
  /** 1-based line of the opening fence. */
  line: number
  /** Words after the language on the fence line (e.g. `nocheck`). */
  flags: string[]
  code: string
}

/** README.md and every docs/*.md, in that order. */
export function markdownFiles(): string[] {
  const docs = readdirSync(join(ROOT, 'docs'))
    .filter((name) => name.endsWith('.md'))
    .sort()
    .map((name) => `docs/${name}`)
  return ['README.md', ...docs]
}

/** Every ```ts / ```typescript block of `file` (repository-relative). */
export function snippetsOf(file: string): Snippet[] {
  const lines = readFileSync(join(ROOT, file), 'utf8').split('\n')
  const out: Snippet[] = []
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,})(\S*)(.*)$/.exec(lines[i]!)
    if (!open) continue
    const [, indent, fence, lang, rest] = open
    const end = lines.findIndex((l, j) => j > i && l.trim() === fence)
    if (end < 0) throw new Error(`${file}:${i + 1}: unclosed code fence`)
    if (lang === 'ts' || lang === 'typescript') {
      const body = lines.slice(i + 1, end).map((l) => l.slice(indent!.length))
      out.push({
        file,
        line: i + 1,
        flags: rest!.trim().split(/\s+/).filter(Boolean),
        code: body.join('\n'),
      })
    }
    i = end
  }
  return out
}

/** Every TypeScript block of the README and docs. */
export function allSnippets(): Snippet[] {
  return markdownFiles().flatMap(snippetsOf)
}
