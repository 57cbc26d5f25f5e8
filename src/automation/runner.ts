import type { Attributes } from '@opentelemetry/api';
import { deadLetterFor } from '../core/dead-letter-checks.js';
import type { CompletionStore } from '../core/dead-letter.js';
import { InvalidArgumentError } from '../core/errors.js';
import type { EventShape, Recorded } from '../core/event.js';
import { consoleLogger } from '../core/logger.js';
import type { Logger } from '../core/logger.js';
import { retryPolicy } from '../core/retry.js';
import type { RetryPolicy } from '../core/retry.js';
import { milliseconds, positiveInteger } from '../core/validate.js';
import { Subscription } from '../subscription/subscription.js';
import type { EngineHooks, HandlerContext, OutstandingWork, SubscriptionState } from '../subscription/subscription.js';
import type { AutomationOptions, AutomationStatus } from './automation.js';
import { TelemetryAttribute } from '../telemetry/telemetry.js';
import { isThenable } from './attempt.js';
import type { ExecuteContext } from './attempt.js';
import { CompletionRecorder, loadCompleted } from './completions.js';
import { DeadLettering } from './dead-letters.js';
import { Executor } from './executor.js';
import { registerInspection } from './inspect.js';
import { NO_FAILURES, Period } from './period.js';
import type { Item } from './period.js';
import { checkItem, normalise } from './todo-items.js';
import type { TodoItem } from './todo-items.js';
import { isTransactional } from './transactional.js';

const defaultRetry: RetryPolicy = { maxAttempts: 5, initialDelayMs: 200, maxDelayMs: 30_000 };
const defaultTriggerRetry: RetryPolicy = { maxAttempts: 3, initialDelayMs: 100, maxDelayMs: 5_000 };

/**
 * One lane of an automation (the whole of it, or one partition; `Automation` is its face): event → to-do items → side effects, with retries, per-key order, a dead-letter queue, and a
 * checkpoint that never passes an item that has not finished (run, or dead-lettered).
 *
 * Delivery: `execute` runs at least once per item. With `completions`, finished items are made durable
 * continuously (see `recordWindow`): after a crash, only the items that were running and the few that
 * finished in the last round trip run again.
 */
export class AutomationRunner<E extends EventShape = EventShape, P = unknown> {
  readonly name: string;
  readonly #options: AutomationOptions<E, P>;
  readonly #subscription: Subscription<E>;
  readonly #completions: CompletionStore | undefined;
  readonly #executor: Executor<P>;
  readonly #letters: DeadLettering<E, P>;
  readonly #retry: RetryPolicy;
  readonly #maxPending: number;
  readonly #pollIntervalMs: number;
  readonly #logger: Logger;
  readonly #progressListeners = new Set<() => void>();
  #period: Period<P> | undefined;
  #capacityWaiters: Array<() => void> = [];
  /** Metric attributes, made once. */
  readonly #attributes: Attributes;

  constructor(options: AutomationOptions<E, P>, engine: EngineHooks<E> = {}) {
    const { backend } = options;
    const transactional = isTransactional<P>(options.execute) ? options.execute : undefined;
    if (typeof options.trigger !== 'function' || (typeof options.execute !== 'function' && !transactional)) {
      throw new InvalidArgumentError(`Automation "${String(options.name)}" needs a trigger function, and an execute function (or one made by inTransaction).`);
    }
    if (transactional && options.completions !== undefined && options.completions !== transactional.completions) {
      throw new InvalidArgumentError(
        `Automation "${String(options.name)}": its execute runs in transactions of another completion store than \`completions\`; give inTransaction the same store, or leave completions out.`,
      );
    }
    this.#completions = transactional ? transactional.completions : (options.completions ?? backend?.completions);
    const deadLetters = options.deadLetters ?? backend?.deadLetters;
    const store = options.store ?? backend?.store;
    if (!deadLetters || !store) {
      throw new InvalidArgumentError(
        `Automation "${String(options.name)}" needs a backend (memory(), sqlite({ path }) or postgres({ connectionString })), or a store, checkpoints and deadLetters.`,
      );
    }
    this.name = options.name;
    this.#options = options;
    this.#retry = retryPolicy(options.retry, defaultRetry);
    this.#maxPending = positiveInteger('maxPending', options.maxPending ?? 1000);
    this.#pollIntervalMs = milliseconds('pollIntervalMs', options.pollIntervalMs ?? 500);
    this.#logger = options.logger ?? consoleLogger();
    this.#attributes = Object.freeze({ [TelemetryAttribute.Automation]: this.name });
    this.#letters = new DeadLettering<E, P>({
      name: this.name,
      deadLetters,
      store,
      trigger: options.trigger,
      retry: this.#retry,
      pollIntervalMs: this.#pollIntervalMs,
      add: (period, item) => this.#add(period, item),
      pump: (period) => this.#executor.pump(period),
      warn: (message, error) => this.#warn(message, error),
      attributes: this.#attributes,
      logger: this.#logger,
    });
    this.#executor = new Executor<P>({
      name: this.name,
      concurrency: positiveInteger('concurrency', options.concurrency ?? 8),
      timeoutMs: milliseconds('timeoutMs', options.timeoutMs ?? 30_000),
      retry: this.#retry,
      recordWindow: positiveInteger('recordWindow', options.recordWindow ?? 1024),
      execute: options.execute as (item: TodoItem<P>, context: ExecuteContext) => unknown,
      executeThis: options,
      transactional,
      finish: (period, item) => this.#finish(period, item),
      givenUp: (period, item, error) => this.#letters.givenUp(period, item, error),
      settleRedrive: (period, letter, outcome) => this.#letters.settleRedrive(period, letter, outcome),
      attributes: this.#attributes,
      logger: this.#logger,
    });

    const work: OutstandingWork = {
      begin: (context) => this.#begin(context),
      earliestPending: () => this.#period?.positions.earliest(),
      onProgress: (listener) => {
        this.#progressListeners.add(listener);
        return () => this.#progressListeners.delete(listener);
      },
      checkpointed: (position) => this.#checkpointed(position),
      end: (reason) => this.#end(reason),
      // After the stop's checkpoint save, whether it happened or not: what it did not cover is recorded.
      finished: async () => {
        await this.#period?.recorder?.recordAll();
      },
    };
    this.#subscription = new Subscription<E>({
      name: options.name,
      backend,
      store,
      checkpoints: options.checkpoints,
      types: options.types,
      category: options.category,
      batchSize: options.batchSize,
      startFrom: options.startFrom,
      pollIntervalMs: this.#pollIntervalMs,
      drainTimeoutMs: options.drainTimeoutMs,
      stopCallTimeoutMs: options.stopCallTimeoutMs,
      statusHeartbeatMs: options.statusHeartbeatMs,
      leaderLock: options.leaderLock,
      logger: this.#logger,
      retry: retryPolicy(options.triggerRetry, defaultTriggerRetry),
      handler: (event, context) => this.#enqueue(event, context),
      onHandlerFailure: async ({ event, error, attempts, signal }) => {
        const period = this.#period;
        await this.#letters.storeUntilStored(deadLetterFor(this.name, 'trigger', event, attempts, error), signal, period);
        return 'skip';
      },
    }, {
      source: engine.source,
      onStateChange: engine.onStateChange,
      routineStandby: engine.routineStandby,
      prepare: engine.prepare,
      outstandingWork: work,
      kind: 'automation',
      work: () => {
        const period = this.#period;
        if (!period) return undefined;
        return {
          pending: period.pending,
          running: period.running,
          hung: period.hung,
          retrying: period.backoffs.size,
          unrecorded: period.recorder?.size ?? 0,
          oldestPendingMs: period.positions.oldestAgeMs(),
        };
      },
    });
    registerInspection(this, () => this.#period);
  }

  /** What its run is doing now ('leading': this node runs it). */
  get state(): SubscriptionState {
    return this.#subscription.state;
  }

  /** Starts in the background (standing by while another node holds the lock). */
  start(): Promise<void> {
    return this.#subscription.start();
  }

  /**
   * Lets running side effects finish (for up to `drainTimeoutMs`), records them, saves the checkpoint,
   * releases leadership.
   */
  stop(): Promise<void> {
    return this.#subscription.stop();
  }

  /** Resolves when stopped, rejects when it failed for good: see `Subscription.done`. */
  get done(): Promise<void> {
    return this.#subscription.done;
  }

  async whenStopped(): Promise<AutomationStatus> {
    await this.#subscription.whenStopped();
    return this.status();
  }

  async status(): Promise<AutomationStatus> {
    const status = await this.#subscription.status();
    const period = this.#period;
    return { ...status, pending: period?.pending ?? 0, running: period?.running ?? 0, hung: period?.hung ?? 0, unrecorded: period?.recorder?.size ?? 0 };
  }

  // ---- leadership period -------------------------------------------------------------------------

  async #begin(context: Parameters<OutstandingWork['begin']>[0]): Promise<void> {
    const { position, fencingToken, signal, fenced, saveCheckpoint } = context;
    // Until the new period exists, nothing of the last one may hold the checkpoint back.
    this.#period = undefined;
    const completed = await loadCompleted(
      { source: this.name, store: this.#completions, retry: this.#retry, pollIntervalMs: this.#pollIntervalMs, logger: this.#logger },
      position,
      signal,
    );
    if (completed === undefined) return;
    const period = new Period<P>(this.name, fencingToken, completed, position, fenced);
    const completions = this.#completions;
    if (completions) {
      period.recorder = new CompletionRecorder({
        source: this.name,
        store: completions,
        fence: period.fence,
        earliestPending: () => period.positions.earliest(),
        saved: () => period.savedPosition,
        saveCheckpoint,
        onFenced: fenced,
        onDurable: () => this.#executor.pump(period),
        warn: (message, error) => this.#warn(message, error),
      });
    }
    this.#period = period;
    const tick = (): void => {
      if (period.ended) return;
      // A write that failed is tried again; records the checkpoint has passed are forgotten.
      period.recorder?.write();
      period.recorder?.prune();
      // Awaited by a stop (it is in flight): it must not settle a letter after stop() resolved. A timer's
      // promise has nobody to reject to: a failure here would crash the process.
      const redrives: Promise<void> = this.#letters.pickUpRedrives(period)
        .catch((error: unknown) => this.#warn('a poll tick failed; the next one tries again', error))
        .finally(() => {
          period.inFlight.delete(redrives);
          if (!period.ended) period.timer = setTimeout(tick, this.#pollIntervalMs);
        });
      period.inFlight.add(redrives);
    };
    period.timer = setTimeout(tick, this.#pollIntervalMs);
  }

  async #end(reason: 'stopped' | 'lost'): Promise<void> {
    const period = this.#period;
    if (!period) return;
    if (reason === 'lost' && period.ended && !period.lost) this.#warnAbandoned(period);
    period.end(reason);
    this.#wakeCapacityWaiters();
    // A stop drains what runs (and the tick in flight); a loss abandons it (the new leader redoes what
    // was not checkpointed).
    if (reason === 'stopped') {
      await Promise.allSettled([...period.inFlight]);
      await period.recorder?.settled();
    }
    // The period stays current until the next begins: the runner's final checkpoint save asks it for
    // the items still pending (abandoned in a backoff wait, or never started), which must hold it back.
  }

  /** A stop gave up waiting for side effects: name each one, as the runner's warning cannot. */
  #warnAbandoned(period: Period<P>): void {
    for (const { item } of period.attempts) {
      this.#logger.warn(
        { automation: this.name, key: item.key, position: item.event.position },
        `Automation "${this.name}": the execute of key "${item.key}" (event at position ${item.event.position}) was still running when stop() ` +
          'stopped waiting; abandoned it (its signal fired). It runs again under the next leadership.',
      );
    }
  }

  #checkpointed(position: number): void {
    const period = this.#period;
    if (!period) return;
    period.savedPosition = position;
    period.recorder?.checkpointed(position);
  }

  // ---- triggering ------------------------------------------------------------------------------

  /** The subscription's handler: trigger, queue the items, start them. Synchronous unless it must wait. */
  #enqueue(event: Recorded<E>, context: HandlerContext): void | Promise<void> {
    const period = this.#period;
    if (!period) return;
    const triggered = this.#options.trigger(event, context);
    if (isThenable(triggered)) return Promise.resolve(triggered).then((result) => this.#queue(period, event, result, context.signal));
    return this.#queue(period, event, triggered, context.signal);
  }

  #queue(
    period: Period<P>,
    event: Recorded<E>,
    triggered: TodoItem<P> | readonly TodoItem<P>[] | undefined | null,
    signal: AbortSignal,
  ): void | Promise<void> {
    if (triggered !== undefined && triggered !== null && !Array.isArray(triggered)) {
      // The common trigger result, one item: no array, no occurrence count.
      const { key, payload } = checkItem(triggered as TodoItem<P>);
      const itemId = `${partPrefix(event)}1:${key}`;
      if (period.completed.size === 0 || !period.completed.has(`${event.position}/${itemId}`)) {
        this.#add(period, { key, payload, itemId, event, position: event.position, redriveOf: undefined, failures: NO_FAILURES });
      }
      this.#executor.pump(period);
      if (period.pending >= this.#maxPending) return this.#waitForCapacity(period, signal);
      return;
    }
    const items = normalise<P>(triggered);
    const occurrences = items.length > 1 ? new Map<string, number>() : undefined;
    for (const { key, payload } of items) {
      const n = (occurrences?.get(key) ?? 0) + 1;
      occurrences?.set(key, n);
      // The occurrence number first keeps ids unambiguous whatever the key contains.
      const itemId = `${partPrefix(event)}${n}:${key}`;
      if (period.completed.size > 0 && period.completed.has(`${event.position}/${itemId}`)) continue;
      this.#add(period, { key, payload, itemId, event, position: event.position, redriveOf: undefined, failures: NO_FAILURES });
    }
    this.#executor.pump(period);
    if (period.pending >= this.#maxPending) return this.#waitForCapacity(period, signal);
  }

  /** Back-pressure: reading pauses while the to-do list is full (a stop or a loss ends the wait). */
  async #waitForCapacity(period: Period<P>, signal: AbortSignal): Promise<void> {
    while (period.pending >= this.#maxPending && !signal.aborted && !period.ended) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          signal.removeEventListener('abort', done);
          resolve();
        };
        signal.addEventListener('abort', done, { once: true });
        this.#capacityWaiters.push(done);
      });
    }
  }

  #add(period: Period<P>, item: Item<P>): void {
    if (item.position !== undefined) period.positions.add(item.position);
    period.pending += 1;
    const queue = period.queues.get(item.key);
    if (queue) {
      queue.push(item);
    } else {
      period.queues.set(item.key, [item]);
      period.readyKeys.push(item.key);
    }
  }

  #finish(period: Period<P>, item: Item<P>): void {
    period.pending -= 1;
    if (item.position !== undefined) period.positions.remove(item.position);
    if (period.pending < this.#maxPending) this.#wakeCapacityWaiters();
    for (const listener of this.#progressListeners) listener();
  }

  #wakeCapacityWaiters(): void {
    if (this.#capacityWaiters.length === 0) return;
    const waiters = this.#capacityWaiters;
    this.#capacityWaiters = [];
    for (const wake of waiters) wake();
  }

  #warn(message: string, error: unknown): void {
    this.#logger.warn({ automation: this.name, err: error }, `Automation "${this.name}": ${message}`);
  }
}

/**
 * Completions are keyed by (position, item id), and the parts of a split stored event share one
 * position: each part after the first prefixes its item ids with its index ("1.1:key"), so their
 * items never pass for one another's. Part 0 and unsplit events keep "1:key".
 */
function partPrefix(event: Recorded): string {
  const index = event.part?.index;
  return index === undefined || index === 0 ? '' : `${index}.`;
}
