// tsc compiles only TypeScript: copy the Lua and SQL files the backends load at run time.
import { cpSync, existsSync, readdirSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'

const assets = /\.(lua|sql|cjs)$/
function walk(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) walk(path)
    else if (assets.test(name)) cpSync(path, join('dist', relative('src', path)))
  }
}
if (existsSync('src')) walk('src')
