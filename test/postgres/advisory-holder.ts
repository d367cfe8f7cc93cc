// The benchmark's peer: holds a session advisory lock (the advisory-lock package) in its own
// process until killed, so a SIGKILL can be compared with conclave's failover.
import advisory from 'advisory-lock'

const mutex = advisory.default(process.env.PG_URL!)(process.env.PG_LOCK!)
await mutex.lock()
process.send?.({ type: 'locked' })
process.on('disconnect', () => process.exit(0))
setInterval(() => {}, 60_000) // held until killed
