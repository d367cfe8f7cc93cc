// Every TypeScript block of README.md and docs/*.md type-checks, strict, under `nodenext` and
// `bundler` resolution, against the built package: the blocks import 'conclave/...' and reach
// dist/ through the package's self-reference (its exports), as a user's code reaches it.
// A page's blocks read as one text: a block sees the imports of the blocks above it on the same
// page (a page often imports once at the top). Names a block uses without defining (the
// user's own `log`, `backend`, `runReports`...) are declared once in
// test/docs/snippet-globals.d.ts. A block fenced ```ts nocheck is skipped.
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import ts from 'typescript'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { allSnippets, ROOT, type Snippet } from '../../testkit/snippets.js'

const dir = join(ROOT, '.tmp', `snippets-${process.pid}`)
const snippets = allSnippets()
const checked = snippets.filter((s) => !s.flags.includes('nocheck'))
const fileOf = (s: Snippet) => join(dir, `${s.file.replace(/[/.]/g, '_')}_${s.line}.ts`)
// Lines put before each block's text (the imports carried from above), per file written.
const carried = new Map<string, number>()

/** One name an import declaration binds: `text` is how it reads in the braces, if named. */
interface Binding {
  module: string
  name: string
  /** The `{ ... }` element (`a`, `a as b`), or undefined for a default or namespace import. */
  element?: string
  /** The whole declaration, for a default or namespace import. */
  declaration: string
}

/** The names `code`'s import declarations bind, with their modules. */
function importsOf(code: string): Binding[] {
  const source = ts.createSourceFile('block.ts', code, ts.ScriptTarget.ES2022, true)
  return source.statements.filter(ts.isImportDeclaration).flatMap((node) => {
    const module = (node.moduleSpecifier as ts.StringLiteral).text
    const declaration = node.getText()
    const clause = node.importClause
    const out: Binding[] = []
    if (clause?.name) out.push({ module, name: clause.name.text, declaration })
    const bindings = clause?.namedBindings
    if (bindings && ts.isNamespaceImport(bindings)) {
      out.push({ module, name: bindings.name.text, declaration })
    }
    if (bindings && ts.isNamedImports(bindings)) {
      for (const e of bindings.elements) {
        out.push({ module, name: e.name.text, element: e.getText(), declaration })
      }
    }
    return out
  })
}

/** The block's text, after the imports of the blocks above it that it does not repeat. */
function moduleText(s: Snippet): { text: string; offset: number } {
  const taken = new Set(importsOf(s.code).map((b) => b.name))
  const lines: string[] = []
  const named = new Map<string, string[]>()
  const above = checked.filter((o) => o.file === s.file && o.line < s.line)
  for (const binding of above.flatMap((o) => importsOf(o.code))) {
    // A name the block imports itself, or imported twice above, is carried once at most.
    if (taken.has(binding.name)) continue
    taken.add(binding.name)
    if (binding.element === undefined) lines.push(binding.declaration)
    else named.set(binding.module, [...(named.get(binding.module) ?? []), binding.element])
  }
  for (const [module, elements] of named) {
    lines.push(`import { ${elements.join(', ')} } from '${module}'`)
  }
  return lines.length
    ? { text: `${lines.join('\n')}\n${s.code}`, offset: lines.length }
    : { text: s.code, offset: 0 }
}

beforeAll(() => {
  if (!existsSync(join(ROOT, 'dist', 'index.d.ts'))) {
    throw new Error('dist/ is missing: the snippets are checked against the build (npm run build)')
  }
  mkdirSync(dir, { recursive: true })
  // `export {}`: a block without imports is still a module (its own scope, top-level await).
  for (const s of checked) {
    const { text, offset } = moduleText(s)
    carried.set(fileOf(s), offset)
    writeFileSync(fileOf(s), `${text}\nexport {}\n`)
  }
})
afterAll(() => rmSync(dir, { recursive: true, force: true }))

function diagnostics(options: ts.CompilerOptions): string[] {
  const files = [...checked.map(fileOf), join(ROOT, 'test', 'docs', 'snippet-globals.d.ts')]
  const program = ts.createProgram(files, {
    strict: true,
    noUncheckedIndexedAccess: true,
    target: ts.ScriptTarget.ES2022,
    lib: ['lib.es2023.d.ts', 'lib.esnext.disposable.d.ts'],
    types: ['node'],
    skipLibCheck: true,
    noEmit: true,
    ...options,
  })
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const text = ts.flattenDiagnosticMessageText(d.messageText, '\n')
    if (!d.file || d.start === undefined) return text
    const snippet = checked.find((s) => fileOf(s) === d.file!.fileName)
    const { line } = d.file.getLineAndCharacterOfPosition(d.start)
    const offset = carried.get(d.file.fileName) ?? 0
    const where = snippet ? `${snippet.file}:${snippet.line + 1 + line - offset}` : d.file.fileName
    return `${where}: TS${d.code} ${text}`
  })
}

it('finds the blocks, and nocheck stays rare', () => {
  expect(snippets.length).toBeGreaterThan(20)
  expect(snippets.length - checked.length).toBeLessThanOrEqual(3)
})

describe.each([
  [
    'nodenext',
    { module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext },
  ],
  ['bundler', { module: ts.ModuleKind.ESNext, moduleResolution: ts.ModuleResolutionKind.Bundler }],
] as const)('under %s resolution', (_, options) => {
  it('every TypeScript block of README.md and docs/*.md type-checks (strict)', () => {
    expect(diagnostics(options)).toEqual([])
  }, 120_000)
})
