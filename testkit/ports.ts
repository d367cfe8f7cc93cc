import { createServer } from 'node:net'

/**
 * A TCP port on 127.0.0.1 that was free a moment ago: binds port 0, reads the port the kernel
 * chose, closes. Another process can take it before the caller binds it, so the server starters
 * retry with a fresh port when their server reports "address already in use".
 */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.once('error', reject)
    server.listen({ host, port: 0, exclusive: true }, () => {
      const address = server.address()
      if (address === null || typeof address === 'string') {
        server.close()
        reject(new Error(`freePort: unexpected listen address ${String(address)}`))
        return
      }
      const { port } = address
      server.close((err) => (err ? reject(err) : resolve(port)))
    })
  })
}
