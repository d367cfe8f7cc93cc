// The etcd3 package's own Election in a process of its own, for the benchmark that kills it:
// campaigns on the election named in argv and reports to the parent over IPC.
//   argv: endpoint name ttlSeconds
//   sends: { type: 'elected' }
import { Etcd3 } from 'etcd3'

const [endpoint, name, ttl] = process.argv.slice(2)
if (!endpoint || !name || !ttl) throw new Error('usage: etcd3-candidate.ts endpoint name ttl')

const client = new Etcd3({ hosts: endpoint })
const campaign = client.election(name, Number(ttl)).campaign(String(process.pid))
campaign.on('error', () => {})
campaign.on('elected', () => process.send?.({ type: 'elected' }))
process.on('disconnect', () => {
  void campaign
    .resign()
    .catch(() => {})
    .then(() => client.close())
})
