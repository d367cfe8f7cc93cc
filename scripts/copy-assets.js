// tsc compiles only TypeScript: copy the .cjs files the code loads at run time. The Lua scripts
// and the SQL are not copied: they ship as generated modules (scripts/gen-assets.js),
// regenerated here so that a .lua or .sql edited without regenerating never ships stale.
import { cpSync, existsSync, readdirSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { generate } from './gen-assets.js'

const assets = /\.cjs$/
function walk(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) walk(path)
    else if (assets.test(name)) cpSync(path, join('dist', relative('src', path)))
  }
}
if (existsSync('src')) {
  walk('src')
  // tsc ran first and compiled the modules as they were: one written now gets its twin in dist/.
  for (const file of generate({ dist: 'dist' }).stale) {
    console.log(`copy-assets: regenerated ${file} (commit it)`)
  }
}
