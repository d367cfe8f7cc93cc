/**
 * The `local` backend's wire: one JSON message per line over a unix socket (a named pipe on
 * Windows). The hub protocol itself (src/backends/cluster/protocol.ts) is the cluster one; this
 * file only carries its messages, and says whether a socket has a live listener.
 */
import { connect, type Socket } from 'node:net'
import type { Transport } from '../cluster/remote.js'

/** A line longer than this is no message of ours: the connection is dropped. */
export const MAX_LINE_BYTES = 1 << 20

/** Calls `onMessage` for every JSON line on `socket`; a malformed line goes to `onError`. */
export function readLines(
  socket: Socket,
  onMessage: (message: unknown) => void,
  onError: (error: Error) => void,
): void {
  let buffered = ''
  socket.setEncoding('utf8')
  socket.on('data', (chunk: string) => {
    buffered += chunk
    let newline: number
    while ((newline = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, newline)
      buffered = buffered.slice(newline + 1)
      if (line === '') continue
      let message: unknown
      try {
        message = JSON.parse(line)
      } catch {
        onError(new Error(`local: a line that is not JSON (${line.slice(0, 80)})`))
        continue
      }
      onMessage(message)
    }
    if (buffered.length > MAX_LINE_BYTES) {
      onError(new Error(`local: a message over ${MAX_LINE_BYTES} bytes; dropping the connection`))
      socket.destroy()
    }
  })
}

/** Writes one message as a line; throws when the socket is gone. */
export function writeLine(socket: Socket, message: object): void {
  if (socket.destroyed || !socket.writable) throw new Error('the socket to the hub is closed')
  socket.write(`${JSON.stringify(message)}\n`)
}

/** A connected socket as a hub Transport (what RemoteBackend speaks through). */
export function socketTransport(socket: Socket): Transport {
  const listeners = new Set<(message: unknown) => void>()
  readLines(
    socket,
    (message) => {
      for (const listener of [...listeners]) listener(message)
    },
    () => {},
  )
  return {
    send: (message) => writeLine(socket, message),
    onMessage(listener) {
      listeners.add(listener)
      return () => listeners.delete(listener)
    },
    onClose(listener) {
      socket.on('close', listener)
      return () => socket.off('close', listener)
    },
  }
}

/** Connects to `address`; rejects with the system error (ENOENT, ECONNREFUSED, EACCES, ...). */
export function connectSocket(address: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(address)
    const onError = (error: Error) => {
      socket.destroy()
      reject(error)
    }
    socket.once('error', onError)
    socket.once('connect', () => {
      socket.off('error', onError)
      // Errors after connecting end in 'close', which the transport reports.
      socket.on('error', () => {})
      socket.unref()
      resolve(socket)
    })
  })
}

/**
 * Whether a listener is behind `address`: `live` (it accepted), `stale` (a socket file nobody
 * listens on: ECONNREFUSED), `absent` (no file). Anything else (EACCES: another user's) throws.
 * Only `stale` may be unlinked.
 */
export async function probe(address: string): Promise<'live' | 'stale' | 'absent'> {
  try {
    const socket = await connectSocket(address)
    socket.destroy()
    return 'live'
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'ECONNREFUSED') return 'stale'
    if (code === 'ENOENT') return 'absent'
    throw error
  }
}
