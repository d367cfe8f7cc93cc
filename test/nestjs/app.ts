// A real NestJS application (from npm) using conclave/nestjs: one provider with a @LeaderCron,
// the module on a Redis backend, shutdown hooks on (SIGTERM closes the app), a terminus-style
// health check on request. Run as its own process by nestjs.test.ts:
//   node --import tsx test/nestjs/app.ts <redis URL> <cron name>
// IPC out: ready; fire {fire, token, attempt, aborted}; health {result}. In: health.
// Standard decorators (conclave's tsconfig has no experimentalDecorators): @Injectable and
// @Module work as class decorators either way, and @LeaderCron supports both forms.
import 'reflect-metadata'
import { setTimeout as sleep } from 'node:timers/promises'
import { Injectable, Module } from '@nestjs/common'
import { NestFactory } from '@nestjs/core'
import { redisBackend } from '../../src/backends/redis/index.js'
import {
  ConclaveHealthIndicator,
  ConclaveModule,
  type FireContext,
  LeaderCron,
} from '../../src/nestjs/index.js'

const [url, name] = process.argv.slice(2)
if (!url || !name) throw new Error('usage: app.ts <redis URL> <cron name>')

const send = (message: Record<string, unknown>) => {
  if (process.connected) process.send!({ nest: 1, pid: process.pid, ...message })
}

@Injectable()
class Reports {
  @LeaderCron('*/2 * * * * *', { name, missed: 'all', maxCatchUp: 100 })
  async build({ fireTime, token, signal, attempt }: FireContext): Promise<void> {
    send({ type: 'fire', fire: fireTime.getTime(), token, attempt })
    await sleep(500, undefined, { signal }).catch(() => {})
  }
}

@Module({
  imports: [
    ConclaveModule.forRoot({
      backend: redisBackend({ url }),
      election: { leaseMs: 3_000 },
    }),
  ],
  providers: [Reports],
})
class AppModule {}

const app = await NestFactory.createApplicationContext(AppModule, { logger: ['error'] })
app.enableShutdownHooks()
const health = app.get(ConclaveHealthIndicator)
process.on('message', (message: { type?: string }) => {
  if (message?.type === 'health') send({ type: 'health', result: health.isHealthy('crons') })
})
process.on('disconnect', () => void app.close().then(() => process.exit(0)))
send({ type: 'ready' })
