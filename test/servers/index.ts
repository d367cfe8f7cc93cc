// Private redis-server, etcd and PostgreSQL instances on loopback ephemeral ports, for tests,
// benchmarks and chaos scripts. Install the binaries with scripts/ensure-servers.sh.
export { freePort } from './ports.js'
export { startRedis, redisPing, redisServerPid, redisServerBinary } from './redis.js'
export type { RedisServer, StartRedisOptions } from './redis.js'
export { startEtcd, etcdHealthy, etcdBinary } from './etcd.js'
export type { EtcdServer, StartEtcdOptions } from './etcd.js'
export { startPostgres, postgresReady, postgresBinDir } from './postgres.js'
export type { PostgresServer, StartPostgresOptions } from './postgres.js'
export { ServerStartError, processAlive } from './process.js'
export type { RestartOptions, ServerHandle } from './process.js'
