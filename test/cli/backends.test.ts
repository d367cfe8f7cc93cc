import { describe, expect, it } from 'vitest'
import { BACKEND_SCHEMES, backendFromUrl } from '../../src/cli/backends.js'

describe('backend URLs', () => {
  it('knows every backend scheme', () => {
    expect(BACKEND_SCHEMES).toEqual(
      expect.arrayContaining([
        'memory:',
        'cluster:',
        'redis:',
        'rediss:',
        'postgres:',
        'postgresql:',
        'etcd:',
      ]),
    )
  })

  it('hands multi-host etcd URLs (not WHATWG URLs) to the etcd backend', async () => {
    const backend = await backendFromUrl('etcd://127.0.0.1:1,127.0.0.1:2')
    expect(backend.name).toBe('etcd')
    await backend.close()
  })

  it('refuses what is not a backend URL, naming the rule', async () => {
    await expect(backendFromUrl('127.0.0.1:6379')).rejects.toThrow(/A backend is a URL with one/)
    await expect(backendFromUrl('')).rejects.toThrow(/A backend is a URL with one of the schemes/)
    await expect(backendFromUrl('mysql://db')).rejects.toThrow(/Unknown backend scheme "mysql:"/)
    await expect(backendFromUrl('MEMORY:')).resolves.toMatchObject({ name: 'memory' })
  })
})

describe('a URL with an unknown scheme', () => {
  it('names the scheme without echoing the password', async () => {
    const { backendFromUrl } = await import('../../src/cli/backends.js')
    const attempt = backendFromUrl('mongodb://admin:hunter2@127.0.0.1:27017/x')
    await expect(attempt).rejects.toThrow(/Unknown backend scheme "mongodb:"/)
    await expect(attempt).rejects.toThrow(/admin:\*\*\*@/)
    await expect(attempt).rejects.not.toThrow(/hunter2/)
  })
})
