/**
 * `@RunInPrimary()`: the method runs in the designated process; calls from anywhere else are
 * sent there. Works as a TypeScript 5 standard decorator and as a legacy
 * (`experimentalDecorators`) one.
 *
 * The handler is registered under `options.name`, default `ClassName.method`, in every process:
 * - standard decorators: when the first instance is constructed (static methods: when the class
 *   is defined), bound to that instance, so the method may use `this`;
 * - legacy decorators have no construction hook: the handler runs with `this` set to the
 *   prototype (static methods: the class), so instance state is not available there.
 */
import { OptionsError } from '../errors.js'
import type { ProcessAgent } from './agent.js'
import { getAgent } from './default.js'

/** Options of the `@RunInPrimary()` decorator. */
export interface RunInPrimaryOptions {
  /** The handler name, the same in every process. Default `ClassName.method`. */
  name?: string
  timeoutMs?: number
  /** The agent to use. Default: the default agent (`startAgent()`). */
  agent?: ProcessAgent | (() => ProcessAgent)
}

type Method = (this: unknown, ...args: never[]) => unknown

/**
 * Method decorator: every call of the method runs in the designated process, on its instance
 * (the method is registered under `name` in every process).
 */
export function RunInPrimary(options: RunInPrimaryOptions = {}) {
  if (typeof options !== 'object' || options === null) {
    throw new OptionsError('options', options, 'RunInPrimary() options must be an object.')
  }
  const agentOf = (): ProcessAgent =>
    typeof options.agent === 'function' ? options.agent() : (options.agent ?? getAgent())
  const callOptions = options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }

  const wrap = (method: string, nameOf: (self: unknown) => string) =>
    function (this: unknown, ...args: unknown[]): Promise<unknown> {
      return agentOf().call(nameOf(this), args, callOptions)
    }

  const classNameOf = (self: unknown): string => {
    const ctor =
      typeof self === 'function' ? self : (self as { constructor?: unknown })?.constructor
    return (ctor as { name?: string } | undefined)?.name || 'anonymous'
  }

  // A decorated method returns a promise (its result comes from another process): declare it so.
  /** @typeParam T - The decorated method, which must return a promise. */
  function decorator<T extends (...args: never[]) => PromiseLike<unknown>>(
    value: T,
    context: ClassMethodDecoratorContext,
  ): T
  function decorator(
    target: object,
    key: string | symbol,
    descriptor: PropertyDescriptor,
  ): PropertyDescriptor
  function decorator(a: unknown, b: unknown, c?: unknown): unknown {
    if (typeof b === 'object' && b !== null && 'kind' in b) {
      const context = b as ClassMethodDecoratorContext
      if (context.kind !== 'method' || typeof context.name !== 'string') {
        throw new OptionsError(
          'decorator',
          context.kind,
          '@RunInPrimary() decorates methods with string names.',
        )
      }
      const method = context.name
      const original = a as Method
      const nameOf = (self: unknown) => options.name ?? `${classNameOf(self)}.${method}`
      context.addInitializer(function (this: unknown) {
        const agent = agentOf()
        const name = nameOf(this)
        // The first instance serves; later instances share it (the method's state lives there).
        if (!agent.has(name)) agent.register(name, original.bind(this))
      })
      return wrap(method, nameOf)
    }
    const target = a as object
    const key = b
    const descriptor = c as PropertyDescriptor
    if (typeof key !== 'string' || typeof descriptor?.value !== 'function') {
      throw new OptionsError(
        'decorator',
        key,
        '@RunInPrimary() decorates methods with string names.',
      )
    }
    const original = descriptor.value as Method
    const owner = typeof target === 'function' ? target : target.constructor
    const name = options.name ?? `${classNameOf(owner)}.${key}`
    const agent = agentOf()
    if (!agent.has(name)) agent.register(name, original.bind(target))
    return { ...descriptor, value: wrap(key, () => name) }
  }
  return decorator
}
