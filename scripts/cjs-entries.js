// conclave is ESM; CommonJS users require() it (Node 20.19+ loads ES modules synchronously).
// This gives them a real CommonJS door and CommonJS-flavoured types, so TypeScript under
// `module: node16/nodenext` from a .cts/CJS file (TS < 5.8 refuses an ESM-typed import there,
// TS1479) and bundlers honouring `require` agree with what Node does:
// - beside each entry point's index.js, an index.cjs that re-exports it (module.exports is the
//   ES module's namespace: one instance, no dual-package hazard);
// - beside every .d.ts, a .d.cts twin whose relative imports name .cjs files, so TypeScript
//   reads the whole declaration graph as CommonJS.
// The entry points are the package.json exports' `require` targets. Run by npm run build.
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { basename, join } from 'node:path'

const pkg = JSON.parse(readFileSync('package.json', 'utf8'))

function walk(dir, out = []) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) walk(path, out)
    else out.push(path)
  }
  return out
}

/** A declaration's relative `.js` specifiers, rewritten to `.cjs` (TypeScript maps them to .d.cts). */
export function toCjsDeclaration(text) {
  return text.replace(
    /((?:from|import\()\s*['"])(\.{1,2}\/[^'"]+?)\.js(['"])/g,
    (_, head, path, tail) => `${head}${path}.cjs${tail}`,
  )
}

if (existsSync('dist')) {
  for (const file of walk('dist')) {
    if (file.endsWith('.d.ts')) {
      writeFileSync(
        file.replace(/\.d\.ts$/, '.d.cts'),
        toCjsDeclaration(readFileSync(file, 'utf8')),
      )
    }
  }
  for (const [subpath, target] of Object.entries(pkg.exports)) {
    const cjs = typeof target === 'object' ? target.require?.default : undefined
    if (!cjs) continue
    const esm = target.import.default
    if (!existsSync(esm))
      throw new Error(`cjs-entries: ${subpath}: ${esm} is missing (build first)`)
    writeFileSync(
      cjs,
      `'use strict'\n// CommonJS door to the ES module beside it (require(esm), Node 20.19+).\nmodule.exports = require('./${basename(esm)}')\n`,
    )
  }
}
