// The test kit that tests, benchmarks and chaos runs share: private redis-server, etcd and
// PostgreSQL instances on loopback ephemeral ports (install the binaries with
// scripts/ensure-servers.sh), and the TCP fault proxy that cuts or delays a path.
export { freePort } from './ports.js'
export { startRedis, redisPing, redisServerPid, redisServerBinary } from './redis.js'
export type { RedisServer, StartRedisOptions } from './redis.js'
export { startEtcd, etcdHealthy, etcdBinary } from './etcd.js'
export type { EtcdServer, StartEtcdOptions } from './etcd.js'
export { startPostgres, postgresReady, postgresBinDir } from './postgres.js'
export type { PostgresServer, StartPostgresOptions } from './postgres.js'
export { ServerStartError, processAlive } from './process.js'
export type { RestartOptions, ServerHandle } from './process.js'
export { startProxy, type CutMode, type FaultProxy, type StartProxyOptions } from './proxy.js'
export { startEtcdCluster } from './etcd-cluster.js'
export type { EtcdCluster, EtcdClusterMember, StartEtcdClusterOptions } from './etcd-cluster.js'
export { startPostgresStandby } from './postgres-standby.js'
export type { PostgresStandbyPair, StartPostgresStandbyOptions } from './postgres-standby.js'
export { startSwitch, type TcpSwitch } from './switch.js'
export { startSentinelTopology } from './redis-sentinel.js'
export type {
  SentinelReplicaOptions,
  SentinelServer,
  SentinelTopology,
  StartSentinelOptions,
} from './redis-sentinel.js'
export { startRedisCluster, redisCliBinary } from './redis-cluster.js'
export type { RedisCluster, StartRedisClusterOptions } from './redis-cluster.js'
