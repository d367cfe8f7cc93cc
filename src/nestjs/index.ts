/**
 * `conclave/nestjs`: leader-only cron for NestJS. `ConclaveModule.forRoot({ backend })` finds every
 * provider method decorated with `@LeaderCron(expression, options)` when the application starts
 * and runs it through `singletonCron()`: on one instance of the group, each fire once, with the
 * fire's `{ fireTime, token, signal, attempt }` as its argument. Closing the application
 * (`app.close()`, or SIGTERM with `app.enableShutdownHooks()`) ends the terms first, so another
 * instance takes over within a round trip. `ConclaveHealthIndicator` reports to
 * `@nestjs/terminus`.
 *
 * Written without decorator syntax and without `emitDecoratorMetadata` (factory providers with
 * explicit `inject`), so it builds with conclave's own tsconfig; `@LeaderCron` works both as a
 * legacy (`experimentalDecorators`, what Nest applications use) and as a standard decorator.
 * `@nestjs/common` and `@nestjs/core` are optional peer dependencies, loaded only here.
 */
import { type DynamicModule, Module, type Provider } from '@nestjs/common'
import { DiscoveryModule, DiscoveryService, MetadataScanner } from '@nestjs/core'
import type { Backend } from '../backend.js'
import { OptionsError } from '../errors.js'
import { HealthCheck, type HealthOptions } from '../health.js'
import type { ElectionOptions } from '../options.js'
import {
  type FireContext,
  type Schedule,
  type ScheduleOptions,
  singletonCron,
} from '../schedule.js'

/** Options of `ConclaveModule.forRoot()`. */
export interface ConclaveModuleOptions {
  /** The backend every leader cron of the application campaigns through. */
  backend: Backend
  /** Election options for every cron (a cron's own `election` option wins). */
  election?: ElectionOptions
  /** Close the backend when the application shuts down. Default true. */
  closeBackend?: boolean
  /** Options of the health indicator's check. */
  health?: HealthOptions
}

/** Options of `@LeaderCron`: schedule() options, plus the cron's name and election options. */
export interface LeaderCronOptions extends Omit<ScheduleOptions, 'signal'> {
  /** The cron's name: its resource is `cron/<name>`. Default `<ClassName>.<method>`. */
  name?: string
  election?: ElectionOptions
}

/** The injection token of the module's options. */
export const CONCLAVE_OPTIONS = Symbol.for('conclave:nestjs:options')

interface Registration {
  method: string | symbol
  expression: string
  options: LeaderCronOptions
}

/** The crons declared on each class prototype. */
const registry = new WeakMap<object, Registration[]>()

function register(prototype: object, registration: Registration): void {
  const list = registry.get(prototype) ?? []
  if (!list.some((r) => r.method === registration.method)) list.push(registration)
  registry.set(prototype, list)
}

/**
 * Marks a provider method as a leader-only cron: it runs at each fire of `expression` on one
 * instance, each fire once, called with the fire's `FireContext` (`fireTime`, `token` for
 * fenced writes, `signal` that aborts when the term ends, `attempt`).
 *
 * ```ts
 * @Injectable()
 * export class Reports {
 *   @LeaderCron('0 3 * * *', { timezone: 'Europe/Berlin', missed: 'once' })
 *   async nightly({ fireTime, token, signal }: FireContext) { ... }
 * }
 * ```
 */
export function LeaderCron(expression: string, options: LeaderCronOptions = {}) {
  if (typeof expression !== 'string')
    throw new OptionsError(
      'expression',
      expression,
      'A cron expression is a string, e.g. "0 3 * * *".',
    )
  return function decorate(target: object, context?: unknown, _descriptor?: unknown): void {
    if (typeof context === 'object' && context !== null && 'kind' in context) {
      // A standard decorator: (method, context). Registered when an instance is made.
      const ctx = context as {
        kind: string
        name: string | symbol
        addInitializer(fn: () => void): void
      }
      if (ctx.kind !== 'method')
        throw new OptionsError('@LeaderCron', ctx.kind, '@LeaderCron decorates methods.')
      ctx.addInitializer(function (this: unknown) {
        register(Object.getPrototypeOf(this) as object, { method: ctx.name, expression, options })
      })
      return
    }
    // A legacy decorator: (prototype, name, descriptor).
    register(target, { method: context as string | symbol, expression, options })
  }
}

/** Runs the application's leader crons; injectable as `ConclaveService`. */
export class ConclaveService {
  readonly backend: Backend
  /** The running crons, by name. */
  readonly schedules = new Map<string, Schedule>()
  readonly health: HealthCheck
  readonly #options: ConclaveModuleOptions
  readonly #discovery: DiscoveryService
  readonly #scanner: MetadataScanner

  constructor(
    options: ConclaveModuleOptions,
    discovery: DiscoveryService,
    scanner: MetadataScanner,
  ) {
    this.#options = options
    this.backend = options.backend
    this.#discovery = discovery
    this.#scanner = scanner
    this.health = new HealthCheck(options.health)
  }

  /** Nest lifecycle: start every `@LeaderCron` of every provider. */
  onApplicationBootstrap(): void {
    for (const wrapper of this.#discovery.getProviders()) {
      const instance = wrapper.instance as Record<string | symbol, unknown> | undefined
      if (!instance || typeof instance !== 'object') continue
      const prototype = Object.getPrototypeOf(instance) as object | null
      if (!prototype) continue
      const methods = new Set<string | symbol>(this.#scanner.getAllMethodNames(prototype))
      for (const found of registrationsOf(prototype)) {
        if (!methods.has(found.method) && typeof instance[found.method] !== 'function') continue
        const { name, election, ...options } = found.options
        const cronName = name ?? `${prototype.constructor.name}.${String(found.method)}`
        if (this.schedules.has(cronName)) continue
        const fn = (context: FireContext) =>
          (instance[found.method] as (c: FireContext) => unknown).call(instance, context)
        const job = singletonCron(this.backend, cronName, found.expression, fn, {
          ...options,
          election: { ...this.#options.election, ...election },
        })
        this.health.track(job.election)
        this.schedules.set(cronName, job)
      }
    }
  }

  /** Nest lifecycle: end every term (drain, release) so another instance takes over at once. */
  async beforeApplicationShutdown(): Promise<void> {
    await Promise.all([...this.schedules.values()].map((job) => job.close()))
  }

  /** Nest lifecycle: close the backend (unless `closeBackend: false`). */
  async onApplicationShutdown(): Promise<void> {
    this.health.close()
    if (this.#options.closeBackend !== false) await this.backend.close()
  }
}

function registrationsOf(prototype: object): Registration[] {
  const all: Registration[] = []
  for (
    let p: object | null = prototype;
    p && p !== Object.prototype;
    p = Object.getPrototypeOf(p) as object | null
  )
    for (const r of registry.get(p) ?? []) if (!all.some((a) => a.method === r.method)) all.push(r)
  return all
}

/**
 * A `@nestjs/terminus` health indicator (no import of terminus needed): `isHealthy()` answers
 * `{ [key]: { status: 'up' | 'down', leading, problems } }`, the HealthIndicatorResult shape.
 *
 * ```ts
 * check = () => this.health.check([() => this.conclave.isHealthy('crons')])
 * ```
 */
export class ConclaveHealthIndicator {
  readonly #service: ConclaveService
  constructor(service: ConclaveService) {
    this.#service = service
  }

  isHealthy<K extends string = 'conclave'>(
    key: K = 'conclave' as K,
  ): Record<K, { status: 'up' | 'down'; leading: string[]; problems: string[] }> {
    const report = this.#service.health.check()
    return {
      [key]: {
        status: report.healthy ? 'up' : 'down',
        leading: report.elections.filter((e) => e.leader).map((e) => e.resource),
        problems: report.problems,
      },
    } as Record<K, { status: 'up' | 'down'; leading: string[]; problems: string[] }>
  }
}

/** The Nest module; use `ConclaveModule.forRoot({ backend })` (global: import it once). */
export class ConclaveModule {
  static forRoot(options: ConclaveModuleOptions): DynamicModule {
    if (typeof options !== 'object' || options === null || typeof options.backend !== 'object')
      throw new OptionsError(
        'backend',
        options?.backend,
        'ConclaveModule.forRoot() takes { backend }.',
      )
    const providers: Provider[] = [
      { provide: CONCLAVE_OPTIONS, useValue: options },
      {
        provide: ConclaveService,
        useFactory: (o: ConclaveModuleOptions, d: DiscoveryService, s: MetadataScanner) =>
          new ConclaveService(o, d, s),
        inject: [CONCLAVE_OPTIONS, DiscoveryService, MetadataScanner],
      },
      {
        provide: ConclaveHealthIndicator,
        useFactory: (service: ConclaveService) => new ConclaveHealthIndicator(service),
        inject: [ConclaveService],
      },
    ]
    return {
      module: ConclaveModule,
      global: true,
      imports: [DiscoveryModule],
      providers,
      exports: [ConclaveService, ConclaveHealthIndicator, CONCLAVE_OPTIONS],
    }
  }
}
Module({})(ConclaveModule)

export type { FireContext } from '../schedule.js'
