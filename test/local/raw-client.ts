// A client of a `local` hub speaking the wire by hand, for what a LocalBackend never does on
// purpose: it says who it is (hello, with a handle id), acquires one grant, then cuts its socket
// and lives on.
//   node --import tsx test/local/raw-client.ts <socket path> <resource> <candidate> <leaseMs> [again]
// Prints the acquire's answer as one JSON line, then `dropped` once its socket is closed. With
// `again`, it then connects once more under the same handle, says nothing but hello (no adopt,
// no synced) and cuts that socket too: `dropped again`. It stays alive (and silent) until killed.
import { randomBytes } from 'node:crypto'
import { connect } from 'node:net'
import { selfIdentity } from '../../src/backends/local/identity.js'

const [address, resource, candidate, leaseMs, again] = process.argv.slice(2)
const handle = randomBytes(8).toString('hex')
const hello = `${JSON.stringify({ 'conclave-local': 1, type: 'hello', identity: selfIdentity(), handle })}\n`
const socket = connect(address!)
socket.setEncoding('utf8')
socket.on('connect', () => {
  socket.write(hello)
  const args = { resource, candidate, tickets: 1, leaseMs: Number(leaseMs), metadata: null }
  socket.write(
    `${JSON.stringify({ conclave: 1, type: 'request', id: 'r1', op: 'acquire', args })}\n`,
  )
})
let buffered = ''
socket.on('data', (chunk: string) => {
  buffered += chunk
  const newline = buffered.indexOf('\n')
  if (newline < 0) return
  const answer = JSON.parse(buffered.slice(0, newline)) as { value?: unknown }
  process.stdout.write(`${JSON.stringify(answer.value)}\n`)
  socket.destroy()
  socket.on('close', () => {
    process.stdout.write('dropped\n')
    if (again !== 'again') return
    const second = connect(address!)
    second.on('connect', () => {
      second.write(hello)
      // Once the hub has read the hello (it answers nothing to it), cut this one too.
      setTimeout(() => second.destroy(), 200)
    })
    second.on('close', () => process.stdout.write('dropped again\n'))
    second.on('error', (error) => {
      process.stderr.write(`${error.message}\n`)
      process.exit(1)
    })
  })
})
socket.on('error', (error) => {
  process.stderr.write(`${error.message}\n`)
  process.exit(1)
})
setInterval(() => {}, 60_000)
