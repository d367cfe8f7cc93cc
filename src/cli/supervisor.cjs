// The supervisor of `conclave run`, run as `node supervisor.cjs <command JSON> <graceMs>
// <silenceMs>`. Plain CommonJS with no imports from conclave, so it starts in a few tens of ms
// with or without a build. It is spawned detached: it leads a new process group (its pgid is
// its pid), holding CMD and all its descendants, and kills that group when conclave run goes
// away (its IPC channel closes) or goes silent past the term's deadline.
'use strict'
process.title = 'conclave-run-supervisor'
const { spawn } = require('node:child_process')
const command = JSON.parse(process.argv[2])
const graceMs = Number(process.argv[3])
const silenceMs = Number(process.argv[4])
const now = () => performance.now()
const killGroup = (signal) => {
  try {
    process.kill(-process.pid, signal)
  } catch {
    // The group is already gone.
  }
}
// The lifeline: conclave run is gone (its end of the IPC channel closed), so is everything here.
const lifeline = () => {
  killGroup('SIGKILL')
  process.exit(137)
}
process.on('disconnect', lifeline)
if (!process.connected) lifeline()
// Signals reach the whole group; this process outlives them to report how the command ended.
for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'])
  process.on(s, () => {})
let heardAt = now()
let deadline = Infinity
// When the group was asked to stop (SIGTERM sent, or forwarded): SIGKILL follows after the grace.
let stoppingSince
let byWatchdog = false
const stop = () => {
  if (stoppingSince !== undefined) return
  stoppingSince = now()
  killGroup('SIGTERM')
}
// conclave run sends every signal through here, so the command never gets SIGTERM twice.
process.on('message', (message) => {
  heardAt = now()
  if (!message) return
  if (typeof message.until === 'number') deadline = heardAt + message.until
  if (message.stop) stop()
  if (typeof message.signal === 'string') {
    killGroup(message.signal)
    if (message.thenKill && stoppingSince === undefined) stoppingSince = now()
  }
})
const send = (message, then) => {
  try {
    process.send(message, then)
  } catch {
    then()
  }
}
setInterval(() => {
  const t = now()
  if (stoppingSince === undefined) {
    // The dead man's switch: the term is over and conclave run has gone silent.
    if (t < deadline || t - heardAt < silenceMs) return
    byWatchdog = true
    stop()
  } else if (t - stoppingSince >= graceMs) lifeline()
}, 20).unref()
const child = spawn(command[0], command.slice(1), { stdio: 'inherit' })
child.on('error', (error) => {
  send({ spawnError: { code: error.code, message: error.message } }, lifeline)
})
child.on('exit', (code, signal) => {
  // Whatever the command left behind in its group dies with it: nothing runs past the term.
  send({ exit: { code, signal, watchdog: byWatchdog } }, () => killGroup('SIGKILL'))
})
