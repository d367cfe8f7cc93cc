// The command `conclave run` runs in tests: records its start (pid, env, grandchild) in DIR, then
// behaves as MODE says. Plain JavaScript, so it starts fast.
//   node run-child.mjs DIR MODE...   with MODE: exit:N  term-exit:N  term-ignore  grandchild
import { spawn } from 'node:child_process'
import { appendFileSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

const [dir, ...modes] = process.argv.slice(2)
const mode = (name) => modes.find((m) => m === name || m.startsWith(`${name}:`))
const events = join(dir, `${process.pid}.events`)

let grandchild
if (mode('grandchild')) {
  grandchild = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], {
    stdio: 'ignore',
  }).pid
}
const termExit = mode('term-exit')
process.on('SIGTERM', () => {
  appendFileSync(events, 'SIGTERM\n')
  if (termExit) process.exit(Number(termExit.split(':')[1]))
  // term-ignore: keep running, as a command that ignores SIGTERM would
})
process.on('SIGINT', () => {
  appendFileSync(events, 'SIGINT\n')
  if (termExit) process.exit(Number(termExit.split(':')[1]))
})
const record = {
  pid: process.pid,
  grandchild,
  token: process.env.CONCLAVE_TOKEN,
  leaderId: process.env.CONCLAVE_LEADER_ID,
  resource: process.env.CONCLAVE_RESOURCE,
  at: Date.now(),
}
// Written whole, then renamed: a reader never sees half a file.
writeFileSync(join(dir, `${process.pid}.tmp`), JSON.stringify(record))
renameSync(join(dir, `${process.pid}.tmp`), join(dir, `${process.pid}.json`))
const exit = mode('exit')
if (exit) process.exit(Number(exit.split(':')[1]))
setInterval(() => {}, 1_000)
