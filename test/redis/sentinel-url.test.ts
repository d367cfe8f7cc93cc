// redis+sentinel:// URLs: parsed into ioredis' sentinels/name options, conclave's settings taken
// out, secrets never shown. (A live connection through one: sentinel-failover.test.ts.)
import { describe, expect, it } from 'vitest'
import { parseRedisUrl, redactUrl } from '../../src/backends/redis/index.js'
import { OptionsError } from '../../src/errors.js'

describe('redis+sentinel:// URLs', () => {
  it('name the sentinels, the master, its credentials, the db and conclave settings', () => {
    const parsed = parseRedisUrl(
      'redis+sentinel://app:s3cret@10.0.0.1:26379,10.0.0.2,[::1]:5000/mymaster?db=2&replicas=1&replicaTimeoutMs=250&failoverGrace=false&prefix=jobs:&sentinelPassword=sp',
    )
    expect(parsed.sentinel).toEqual({
      sentinels: [
        { host: '10.0.0.1', port: 26379 },
        { host: '10.0.0.2', port: 26379 },
        { host: '::1', port: 5000 },
      ],
      name: 'mymaster',
      username: 'app',
      password: 's3cret',
      db: 2,
      sentinelPassword: 'sp',
    })
    expect(parsed).toMatchObject({
      replicas: 1,
      replicaTimeoutMs: 250,
      failoverGrace: false,
      prefix: 'jobs:',
    })
  })

  const refused: [string, string, string][] = [
    ['no master name', 'redis+sentinel://h:26379', 'url'],
    ['a bad port', 'redis+sentinel://h:99999/m', 'url'],
    ['an empty host', 'redis+sentinel://h:1,/m', 'url'],
    ['an unknown parameter', 'redis+sentinel://h/m?retries=3', 'retries'],
    ['replicas not a number', 'redis+sentinel://h/m?replicas=one', 'replicas'],
    ['failoverGrace not a boolean', 'redis+sentinel://h/m?failoverGrace=no', 'failoverGrace'],
    ['maxLeaseMs not a number', 'redis+sentinel://h/m?maxLeaseMs=1m', 'maxLeaseMs'],
  ]
  for (const [label, url, field] of refused) {
    it(`refuses ${label}, naming ${field}`, () => {
      let error: unknown
      try {
        parseRedisUrl(url)
      } catch (e) {
        error = e
      }
      expect(error).toBeInstanceOf(OptionsError)
      expect((error as OptionsError).field).toBe(field)
    })
  }

  it('never shows a password, in the URL or in a refusal', () => {
    expect(redactUrl('redis+sentinel://u:pw@h:1,h:2/m?sentinelPassword=sp')).not.toMatch(/pw|sp$/)
    let error: unknown
    try {
      parseRedisUrl('redis+sentinel://u:hunter2@h:1,h:2')
    } catch (e) {
      error = e
    }
    expect(String((error as Error).message)).not.toContain('hunter2')
  })

  it('also takes the new settings in a redis:// URL', () => {
    expect(parseRedisUrl('redis://h:6379?replicas=2&failoverGrace=false&maxLeaseMs=30000')).toEqual(
      { url: 'redis://h:6379', replicas: 2, failoverGrace: false, maxLeaseMs: 30_000 },
    )
  })

  it('redis+cluster:// names the nodes to start from and the credentials; unknown parameters are refused', () => {
    expect(parseRedisUrl('redis+cluster://u:pw@10.0.0.1:7000,10.0.0.2?replicas=1')).toEqual({
      url: 'redis+cluster://u:pw@10.0.0.1:7000,10.0.0.2?replicas=1',
      replicas: 1,
      cluster: {
        nodes: [
          { host: '10.0.0.1', port: 7000 },
          { host: '10.0.0.2', port: 6379 },
        ],
        username: 'u',
        password: 'pw',
      },
    })
    expect(() => parseRedisUrl('redis+cluster://h:1?db=2')).toThrow(OptionsError)
    expect(() => parseRedisUrl('redis+cluster://u:hunter2@h:0')).toThrow(
      /redis\+cluster:\/\/u:\*\*\*@h:0/,
    )
  })
})
