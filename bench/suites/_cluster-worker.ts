// A worker for the cluster benchmark: campaigns and resigns on command, reports timings.
import { clusterBackend } from '../../src/backends/cluster/index.js'
import { Election } from '../../src/election.js'
import type { Term } from '../../src/term.js'

type Command =
  | { bench: 'uncontended'; rounds: number; resource: string }
  | { bench: 'campaign'; resource: string; leaseMs: number }
  | { bench: 'resign' }

const backend = clusterBackend()
let election: Election | undefined
let term: Term | undefined

process.on('message', (command: Command) => {
  void (async () => {
    if (command.bench === 'uncontended') {
      const e = new Election(backend, command.resource, { leaseMs: 10_000 })
      const samples: number[] = []
      for (let i = 0; i < command.rounds; i++) {
        const t0 = performance.now()
        const t = await e.campaign()
        samples.push(performance.now() - t0)
        await t.resign()
      }
      await e.close()
      process.send!({ bench: 'samples', samples })
    } else if (command.bench === 'campaign') {
      election = new Election(backend, command.resource, { leaseMs: command.leaseMs })
      election.on('error', () => {})
      term = await election.campaign()
      process.send!({ bench: 'elected', token: term.token })
    } else if (command.bench === 'resign') {
      await term?.resign()
      await election?.close()
      process.send!({ bench: 'resigned' })
    }
  })()
})
process.send!({ bench: 'ready' })
