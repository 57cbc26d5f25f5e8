import type { Attributes, Span } from '@opentelemetry/api';
import { milliseconds, positiveInteger } from '../core/validate.js';
import type { Backend } from '../core/backend.js';
import type { CheckpointStore } from '../core/checkpoint.js';
import { unlessAborted } from '../core/deadline.js';
import { deadLetterFor } from '../core/dead-letter-checks.js';
import { addDeadLetter } from '../core/storable-letter.js';
import type { CompletionStore, DeadLetter, DeadLetterStore, FailedAttempt, NewDeadLetter } from '../core/dead-letter.js';
import { ErrorCode, InvalidArgumentError, TimeoutError, describeError, isEskitError } from '../core/errors.js';
import type { FencedError } from '../core/errors.js';
import type { EventShape, Recorded, RecordedEvent } from '../core/event.js';
import type { LockRegistry } from '../core/lock.js';
import { consoleLogger } from '../core/logger.js';
import type { Logger } from '../core/logger.js';
import { backoffDelay, delay, retryPolicy } from '../core/retry.js';
import type { RetryPolicy } from '../core/retry.js';
import type { EventStore } from '../core/store.js';
import { isTransient } from '../subscription/checkpointing.js';
import { Subscription } from '../subscription/subscription.js';
import type { HandlerContext, OutstandingWork, StartFrom, SubscriptionStatus } from '../subscription/subscription.js';
import { SpanName, TelemetryAttribute, activeTracer, callInSpan, failSpan, instruments, linksToEvents } from '../telemetry/telemetry.js';
import { AttemptContext, isThenable } from './attempt.js';
import type { ExecuteContext } from './attempt.js';
import { CompletionRecorder } from './completions.js';
import { registerInspection } from './inspect.js';
import { NO_FAILURES, Period } from './period.js';
import type { Item, RunningAttempt, Slot } from './period.js';

import { isTransactional } from './transactional.js';
import type { TodoItem, TransactionalExecute } from './transactional.js';

export type { ExecuteContext } from './attempt.js';
export { inTransaction } from './transactional.js';
export type { TodoItem, TransactionalExecute } from './transactional.js';

/**
 * What a trigger gets besides its event: the automation's name (as `subscription`), the lease's token,
 * and a signal that fires when this node must stop (stop() or lost leadership).
 */
export type TriggerContext = HandlerContext;

export type Trigger<E extends EventShape, P> = (
  event: Recorded<E>,
  context: TriggerContext,
) => TodoItem<P> | readonly TodoItem<P>[] | undefined | null | Promise<TodoItem<P> | readonly TodoItem<P>[] | undefined | null>;

export interface AutomationOptions<E extends EventShape, P> {
  /** Names the checkpoint, the lock and the dead letters. */
  name: string;
  /**
   * Where it runs: `memory()`, `sqlite({ path })` or `postgres({ connectionString })`, which give the
   * store, checkpoints, dead letters, completion records and (when on) leader election. Or give the
   * parts yourself: `store`, `checkpoints` and `deadLetters` at least.
   */
  backend?: Backend<E>;
  store?: EventStore<E>;
  checkpoints?: CheckpointStore;
  deadLetters?: DeadLetterStore;
  /**
   * Default: the backend's. Without one, a crash re-runs every item after the checkpoint, completed
   * or not. With an `execute` made by `inTransaction`, it is that one's store (and may be left out).
   */
  completions?: CompletionStore;
  /** Turns an event into to-do items (none is fine). A trigger that keeps throwing dead-letters the event. */
  trigger: Trigger<E, P>;
  /**
   * Runs the side effect. Throw `PermanentFailure` to skip the remaining retries. A `FencedError` (the
   * downstream system saw a newer `ctx.fencingToken`) makes this node step down: the item is neither
   * retried nor dead-lettered here, and runs again under the next leadership. For effects in the
   * same database, `inTransaction(completions, ...)` makes them exactly once.
   */
  execute: ((item: TodoItem<P>, context: ExecuteContext) => unknown) | TransactionalExecute<P>;
  types?: readonly E['type'][];
  /** Leader election. Default: the backend's (on for `postgres()`); false turns it off. */
  leaderLock?: LockRegistry | false;
  /** Items of different keys running at once. A key waiting out a retry's backoff holds no slot. Default 8. */
  concurrency?: number;
  /**
   * Per attempt. Default 30 s. At the timeout the attempt's signal fires and it counts as failed, but
   * its key stays busy until it settles: the retry and the key's next item wait for it, while other
   * keys go on (it gives its slot back, and shows in the status as `hung`).
   */
  timeoutMs?: number;
  /** Retries of `execute`. Default 5 attempts, 200 ms doubling up to 30 s, full jitter. */
  retry?: Partial<RetryPolicy>;
  /** Retries of `trigger` before its event is dead-lettered. Default 3 attempts. */
  triggerRetry?: Partial<RetryPolicy>;
  /** Reading pauses while this many items wait. Default 1000. */
  maxPending?: number;
  /**
   * With `completions`: finished items that are not yet durable (neither recorded nor passed by the
   * saved checkpoint) past which no new item starts. Finished items are made durable continuously,
   * so after a crash only the items in flight and at most this many finished ones run again (in
   * practice those of the last round trip: a handful at hundreds of items per second). Catching up,
   * it caps throughput at about this many items per durable commit. Default 1024.
   */
  recordWindow?: number;
  batchSize?: number;
  pollIntervalMs?: number;
  startFrom?: StartFrom;
  /** How long stop() lets running side effects finish before abandoning them (see SubscriptionOptions). Default 10 000. */
  drainTimeoutMs?: number;
  /** The bound on each database call made while stopping (see SubscriptionOptions). Default 2 000. */
  stopCallTimeoutMs?: number;
  logger?: Logger;
}

export interface AutomationStatus extends SubscriptionStatus {
  /** Items triggered and not finished on this node. */
  pending: number;
  /** Items executing right now (not counting `hung` ones). */
  running: number;
  /** Attempts past their timeout that have not settled yet: each holds its key. */
  hung: number;
  /** Finished items not yet durable (the most a crash now would run again, besides those running). */
  unrecorded: number;
}

/** What an attempt that succeeded synchronously resolves with (no error). */
const SUCCEEDED: Promise<unknown> = Promise.resolve(undefined);

const defaultRetry: RetryPolicy = { maxAttempts: 5, initialDelayMs: 200, maxDelayMs: 30_000 };
const defaultTriggerRetry: RetryPolicy = { maxAttempts: 3, initialDelayMs: 100, maxDelayMs: 5_000 };

/** How running one item's attempt ended, for its key's run. */
type Outcome = 'done' | 'abandoned' | 'backoff';

/**
 * Event → to-do items → side effects, with retries, per-key order, a dead-letter queue, and a
 * checkpoint that never passes an item that has not finished (run, or dead-lettered).
 *
 * Delivery: `execute` runs at least once per item. With `completions`, finished items are made durable
 * continuously (see `recordWindow`): after a crash, only the items that were running and the few that
 * finished in the last round trip run again.
 */
export class Automation<E extends EventShape = EventShape, P = unknown> {
  readonly name: string;
  readonly #options: AutomationOptions<E, P>;
  readonly #subscription: Subscription<E>;
  readonly #completions: CompletionStore | undefined;
  readonly #deadLetters: DeadLetterStore;
  readonly #store: EventStore<E>;
  /** `execute`, unless it was made by `inTransaction` (then `#transactional` is set instead). */
  readonly #execute: (item: TodoItem<P>, context: ExecuteContext) => unknown;
  readonly #transactional: TransactionalExecute<P> | undefined;
  readonly #retry: RetryPolicy;
  readonly #concurrency: number;
  readonly #timeoutMs: number;
  readonly #maxPending: number;
  readonly #recordWindow: number;
  readonly #pollIntervalMs: number;
  readonly #logger: Logger;
  readonly #progressListeners = new Set<() => void>();
  #period: Period<P> | undefined;
  #capacityWaiters: Array<() => void> = [];
  /** Metric attributes, made once. */
  readonly #attributes: Attributes;

  constructor(options: AutomationOptions<E, P>) {
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
    this.#transactional = transactional;
    this.#completions = transactional ? transactional.completions : (options.completions ?? backend?.completions);
    this.#execute = options.execute as (item: TodoItem<P>, context: ExecuteContext) => unknown;
    const deadLetters = options.deadLetters ?? backend?.deadLetters;
    const store = options.store ?? backend?.store;
    if (!deadLetters || !store) {
      throw new InvalidArgumentError(
        `Automation "${String(options.name)}" needs a backend (memory(), sqlite({ path }) or postgres({ connectionString })), or a store, checkpoints and deadLetters.`,
      );
    }
    this.#deadLetters = deadLetters;
    this.#store = store;
    this.name = options.name;
    this.#options = options;
    this.#retry = retryPolicy(options.retry, defaultRetry);
    this.#concurrency = positiveInteger('concurrency', options.concurrency ?? 8);
    this.#timeoutMs = milliseconds('timeoutMs', options.timeoutMs ?? 30_000);
    this.#maxPending = positiveInteger('maxPending', options.maxPending ?? 1000);
    this.#recordWindow = positiveInteger('recordWindow', options.recordWindow ?? 1024);
    this.#pollIntervalMs = milliseconds('pollIntervalMs', options.pollIntervalMs ?? 500);
    this.#logger = options.logger ?? consoleLogger();
    this.#attributes = Object.freeze({ [TelemetryAttribute.Automation]: this.name });

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
      batchSize: options.batchSize,
      startFrom: options.startFrom,
      pollIntervalMs: this.#pollIntervalMs,
      drainTimeoutMs: options.drainTimeoutMs,
      stopCallTimeoutMs: options.stopCallTimeoutMs,
      leaderLock: options.leaderLock,
      logger: this.#logger,
      retry: retryPolicy(options.triggerRetry, defaultTriggerRetry),
      handler: (event, context) => this.#enqueue(event, context),
      onHandlerFailure: async ({ event, error, attempts, signal }) => {
        const period = this.#period;
        await this.#deadLetterUntilStored(deadLetterFor(this.name, 'trigger', event, attempts, error), signal, period);
        return 'skip';
      },
    }, { outstandingWork: work });
    registerInspection(this, () => this.#period);
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
    const completed = await this.#completedAfter(position, signal);
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
        onDurable: () => this.#pump(period),
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
      const redrives: Promise<void> = this.#pickUpRedrives(period)
        .catch((error: unknown) => this.#warn('a poll tick failed; the next one tries again', error))
        .finally(() => {
          period.inFlight.delete(redrives);
          if (!period.ended) period.timer = setTimeout(tick, this.#pollIntervalMs);
        });
      period.inFlight.add(redrives);
    };
    period.timer = setTimeout(tick, this.#pollIntervalMs);
  }

  /**
   * The completion records after the checkpoint, retried with backoff while they cannot be read (a
   * connection reset at takeover must not fail a new leader for good). Undefined when stopped or lost first.
   */
  async #completedAfter(position: number, signal: AbortSignal): Promise<Set<string> | undefined> {
    const completions = this.#completions;
    if (!completions) return new Set();
    for (let attempt = 1; ; attempt++) {
      try {
        const completed = await unlessAborted(completions.completedAfter(this.name, position), signal, undefined);
        if (completed === undefined) return undefined;
        completions.prune(this.name, position).catch((error: unknown) => this.#warn('pruning completion records failed', error));
        return completed;
      } catch (error) {
        if (!isTransient(error)) throw error;
        this.#logger.warn({ automation: this.name, attempt, err: error }, `Automation "${this.name}": reading completion records failed; retrying`);
      }
      try {
        await delay(Math.min(this.#pollIntervalMs, backoffDelay(this.#retry, attempt)), signal);
      } catch {
        return undefined;
      }
    }
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
      const itemId = `1:${key}`;
      if (period.completed.size === 0 || !period.completed.has(`${event.position}/${itemId}`)) {
        this.#add(period, { key, payload, itemId, event, position: event.position, redriveOf: undefined, failures: NO_FAILURES });
      }
      this.#pump(period);
      if (period.pending >= this.#maxPending) return this.#waitForCapacity(period, signal);
      return;
    }
    const items = normalise<P>(triggered);
    const occurrences = items.length > 1 ? new Map<string, number>() : undefined;
    for (const { key, payload } of items) {
      const n = (occurrences?.get(key) ?? 0) + 1;
      occurrences?.set(key, n);
      // The occurrence number first keeps ids unambiguous whatever the key contains.
      const itemId = `${n}:${key}`;
      if (period.completed.size > 0 && period.completed.has(`${event.position}/${itemId}`)) continue;
      this.#add(period, { key, payload, itemId, event, position: event.position, redriveOf: undefined, failures: NO_FAILURES });
    }
    this.#pump(period);
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

  // ---- executing -------------------------------------------------------------------------------

  /**
   * Starts ready keys while there are free slots and the record window has room. A key is in exactly
   * one place: ready (in `readyKeys`), running (holding a slot), waiting out a backoff (a timer), or
   * waiting for a timed-out attempt to settle; its queue exists until its last item finished.
   */
  #pump(period: Period<P>): void {
    while (!period.ended && period.running < this.#concurrency && period.readyKeys.length > 0) {
      if (this.#windowFull(period, false)) {
        // What may finish would overflow the window: let a write make finished items durable first.
        period.recorder?.write();
        return;
      }
      const key = period.readyKeys.shift() as string;
      period.running += 1;
      const slot: Slot = {
        held: true,
        release: () => {
          if (!slot.held) return;
          slot.held = false;
          period.running -= 1;
        },
      };
      const run: Promise<void> = this.#runKey(period, key, slot).finally(() => {
        slot.release();
        period.inFlight.delete(run);
        this.#pump(period);
      });
      period.inFlight.add(run);
    }
  }

  /**
   * True when starting one more item could leave more finished items not yet durable than the record
   * window allows: those finished already, plus every attempt that may finish (running or hung; one
   * more unless the caller's slot counts it already). A crash must never re-run more than the window.
   */
  #windowFull(period: Period<P>, slotCounted: boolean): boolean {
    if (!period.recorder) return false;
    return period.recorder.size + period.running + period.hung + (slotCounted ? 0 : 1) > this.#recordWindow;
  }

  /** Runs the key's items in order while it holds its slot; returns when it must wait, or has none left. */
  async #runKey(period: Period<P>, key: string, slot: Slot): Promise<void> {
    const queue = period.queues.get(key) as Item<P>[];
    while (queue.length > 0) {
      // Stopping or lost: the item stays pending (holding the checkpoint) until this period ends.
      if (period.ended) return;
      if (this.#windowFull(period, slot.held)) {
        period.readyKeys.unshift(key);
        period.recorder?.write();
        return;
      }
      const item = queue[0] as Item<P>;
      const attempt = item.failures.length + 1;
      const pending = this.#attempt(period, item, attempt, slot);
      // The common case, a synchronous side effect that succeeds at once, costs no promise at all.
      const outcome = pending === SUCCEEDED && !item.redriveOf && !period.lost ? this.#settled(period, item) : await this.#afterAttempt(period, key, item, attempt, pending);
      if (outcome !== 'done') return;
      queue.shift();
      this.#finish(period, item);
      if (item.group && --item.group.remaining === 0) await this.#settleRedrive(period, item.group.letter, { ok: true });
      // Its attempt timed out and gave the slot away: the key queues for a slot like any other.
      if (!slot.held && queue.length > 0) {
        period.readyKeys.push(key);
        return;
      }
    }
    period.queues.delete(key);
  }

  /** What follows an attempt: the item is done, dead-lettered, retried after a backoff (holding no slot), or abandoned. */
  async #afterAttempt(period: Period<P>, key: string, item: Item<P>, attempt: number, pending: Promise<unknown>): Promise<Outcome> {
    const error = await pending;
    if (period.lost) return 'abandoned';
    if (error === undefined) {
      if (item.redriveOf) {
        await this.#settleRedrive(period, item.redriveOf, { ok: true });
        return 'done';
      }
      // In a transaction, its completion was recorded with its side effect.
      return this.#transactional ? 'done' : this.#settled(period, item);
    }
    if (isEskitError(error, ErrorCode.Fenced)) {
      // A newer leader's token won downstream: not the item's fault, so neither retried nor
      // dead-lettered. It stays pending (holding the checkpoint) while this node steps down; the
      // next leadership runs it with a newer token.
      period.fenced(error as FencedError);
      return 'abandoned';
    }
    item.failures = [...item.failures, { at: new Date(), error: describeError(error) }];
    const permanent = isEskitError(error, ErrorCode.PermanentFailure);
    if (permanent || attempt >= this.#retry.maxAttempts) {
      if (!(await this.#givenUp(period, item, error))) return 'abandoned';
      // Recorded like a completion: a new leader must not run it (and dead-letter it) again.
      return item.redriveOf ? 'done' : this.#settled(period, item);
    }
    instruments().handlerRetries.add(1, this.#attributes);
    this.#logger.warn(
      { automation: this.name, key: item.key, position: item.event.position, attempt, err: error },
      `Automation "${this.name}": execute failed; retrying`,
    );
    if (period.ended) return 'abandoned';
    const timer = setTimeout(() => {
      period.backoffs.delete(timer);
      if (period.ended) return;
      period.readyKeys.push(key);
      this.#pump(period);
    }, backoffDelay(this.#retry, attempt));
    period.backoffs.add(timer);
    return 'backoff';
  }

  /**
   * One attempt; resolves with the error, or undefined on success, once it has settled. At the timeout
   * its signal fires and its slot is given back (other keys go on), but it keeps its key until it
   * settles; it then counts as failed with the timeout, unless it succeeded. Cheap on the hot path:
   * the context's signal is only built when `execute` reads it, and timeouts are found by one sweep
   * timer per period rather than a timer per attempt.
   */
  #attempt(period: Period<P>, item: Item<P>, attempt: number, slot: Slot): Promise<unknown> {
    const context = new AttemptContext(this.name, period, attempt, item.event, item.redriveOf !== undefined);
    // One root span per attempt, only when a tracer provider is installed (see src/telemetry).
    const tracer = activeTracer();
    const span = tracer?.startSpan(SpanName.Execute, { root: true, attributes: this.#executeAttributes(item, attempt), links: linksToEvents([item.event]) });
    let result: unknown;
    try {
      const todo: TodoItem<P> = { key: item.key, payload: item.payload };
      if (this.#transactional) {
        const run = (): unknown => this.#inTransaction(this.#transactional as TransactionalExecute<P>, period, item, todo, context);
        result = span ? callInSpan(span, run, undefined) : run();
      } else {
        result = span ? callInSpan(span, this.#execute, this.#options, todo, context) : this.#execute(todo, context);
      }
    } catch (error) {
      const failure = error ?? new Error('execute threw a nullish value');
      if (span) endSpan(span, failure);
      return Promise.resolve(failure);
    }
    // A synchronous execute has finished: nothing to time out.
    if (!isThenable(result)) {
      span?.end();
      return SUCCEEDED;
    }
    const running = result;
    return new Promise<unknown>((resolve) => {
      let expired: TimeoutError | undefined;
      const tracked: RunningAttempt = {
        item: item as Item<unknown>,
        deadline: performance.now() + this.#timeoutMs,
        expired: false,
        expire: () => {
          tracked.expired = true;
          expired = new TimeoutError(`Automation "${this.name}": execute of key "${item.key}"`, this.#timeoutMs);
          AttemptContext.expire(context, expired);
          period.hung += 1;
          instruments().executeTimeouts.add(1, this.#attributes);
          this.#logger.warn(
            { automation: this.name, key: item.key, position: item.event.position, attempt, timeoutMs: this.#timeoutMs },
            `Automation "${this.name}": the execute of key "${item.key}" (event at position ${item.event.position}) passed its ${this.#timeoutMs} ms timeout; ` +
              'its signal fired. Its key waits until it settles; other keys go on.',
          );
          slot.release();
          this.#pump(period);
        },
      };
      const settle = (error: unknown): void => {
        if (expired) period.hung -= 1;
        period.attempts.delete(tracked);
        const outcome = error !== undefined && expired ? expired : error;
        if (span) endSpan(span, outcome);
        resolve(outcome);
      };
      period.attempts.add(tracked);
      this.#sweepTimeouts(period);
      running.then(
        () => settle(undefined),
        (error: unknown) => settle(error ?? new Error('execute threw a nullish value')),
      );
    });
  }

  /**
   * The side effect in the transaction that records the item's completion, fenced by this period's
   * token (a redrive records none: its letter is settled after it, at least once).
   */
  #inTransaction(transactional: TransactionalExecute<P>, period: Period<P>, item: Item<P>, todo: TodoItem<P>, context: ExecuteContext): Promise<unknown> {
    const record = item.position === undefined ? undefined : { position: item.position, itemId: item.itemId };
    return transactional.run(this.name, record, todo, context, period.fence);
  }

  #executeAttributes(item: Item<P>, attempt: number): Attributes {
    return {
      [TelemetryAttribute.Automation]: this.name,
      [TelemetryAttribute.ItemKey]: item.key,
      [TelemetryAttribute.Attempt]: attempt,
      [TelemetryAttribute.Position]: item.event.position,
      [TelemetryAttribute.EventType]: item.event.type,
      [TelemetryAttribute.Redrive]: item.redriveOf !== undefined,
    };
  }

  /**
   * Keeps one timer per period while attempts run that have not timed out; it expires those past their
   * deadline (a monotonic clock). Unref'd: it must not keep a process alive for an abandoned attempt.
   */
  #sweepTimeouts(period: Period<P>): void {
    if (period.sweeper || period.lost || period.attempts.size === period.hung) return;
    const every = Math.max(5, Math.min(1000, Math.floor(this.#timeoutMs / 10)));
    period.sweeper = setTimeout(() => {
      period.sweeper = undefined;
      const now = performance.now();
      for (const running of [...period.attempts]) if (!running.expired && running.deadline <= now) running.expire();
      this.#sweepTimeouts(period);
    }, every);
    period.sweeper.unref();
  }

  /** An item completed or was dead-lettered: made durable, unless the checkpoint passed it already. */
  #settled(period: Period<P>, item: Item<P>): 'done' {
    if (period.recorder && item.position !== undefined && item.position > period.savedPosition) {
      period.recorder.finished({ position: item.position, itemId: item.itemId });
    }
    return 'done';
  }

  /** After the last attempt: the dead-letter queue. False when the period ended (or was fenced) before it was stored. */
  async #givenUp(period: Period<P>, item: Item<P>, error: unknown): Promise<boolean> {
    if (item.redriveOf) {
      await this.#settleRedrive(period, item.redriveOf, { ok: false, attempts: [...item.failures] });
      return true;
    }
    const letter: NewDeadLetter = {
      ...deadLetterFor(this.name, 'execute', item.event, item.failures.length, error, item),
      attempts: [...item.failures],
    };
    try {
      return await this.#deadLetterUntilStored(letter, period.halt.signal, period);
    } catch (storeError) {
      if (!isEskitError(storeError, ErrorCode.Fenced)) throw storeError;
      period.fenced(storeError as FencedError);
      return false;
    }
  }

  /**
   * Stores a dead letter (fenced by the period's token), retrying while the dead-letter store is down:
   * the item keeps holding the checkpoint meanwhile, so nothing is lost. False when stopped before it
   * was stored; a FencedError is thrown (a newer leader claimed the checkpoint).
   */
  async #deadLetterUntilStored(letter: NewDeadLetter, halt: AbortSignal | undefined, period: Period<P> | undefined): Promise<boolean> {
    for (let attempt = 1; ; attempt++) {
      try {
        await addDeadLetter(this.#deadLetters, letter, period?.fence);
        instruments().deadLetters.add(1, { ...this.#attributes, [TelemetryAttribute.Stage]: letter.stage });
        this.#logger.warn(
          { automation: this.name, key: letter.key, position: letter.eventPosition, stage: letter.stage },
          `Automation "${this.name}": gave up after ${letter.attempts.length} attempt(s); dead-lettered`,
        );
        return true;
      } catch (error) {
        if (isEskitError(error, ErrorCode.Fenced)) throw error;
        this.#warn('storing a dead letter failed; retrying', error);
        try {
          await delay(Math.min(this.#pollIntervalMs * 4, backoffDelay(this.#retry, attempt)), halt);
        } catch {
          if (letter.stage === 'trigger') throw error;
          return false;
        }
      }
    }
  }

  // ---- redrive ---------------------------------------------------------------------------------

  async #pickUpRedrives(period: Period<P>): Promise<void> {
    let letters: DeadLetter[];
    try {
      letters = await this.#deadLetters.list({ source: this.name, status: 'redrive', limit: 100 });
    } catch (error) {
      this.#warn('reading redrive requests failed', error);
      return;
    }
    for (const letter of letters) {
      if (period.ended || period.redriving.has(letter.id)) continue;
      period.redriving.add(letter.id);
      let event: RecordedEvent | undefined;
      try {
        event = await this.#eventAt(letter.eventPosition);
      } catch (error) {
        // A tick's promise has no one to reject to (that would crash the process): a later tick retries.
        period.redriving.delete(letter.id);
        this.#warn('reading a redriven event failed; it will be picked up again', error);
        continue;
      }
      if (!event) {
        await this.#settleRedrive(period, letter, { ok: false, attempts: [{ at: new Date(), error: `event at position ${letter.eventPosition} not found` }] });
        continue;
      }
      if (letter.stage === 'execute') {
        this.#add(period, { key: letter.key, payload: letter.payload as P, itemId: letter.key, event, position: undefined, redriveOf: letter, failures: NO_FAILURES });
        continue;
      }
      // A trigger (or handler) failure: run the trigger again; its items then run like any others, and
      // the letter goes only once they all finished (if this node stops first, the next one redoes it).
      try {
        const context: TriggerContext = { subscription: this.name, fencingToken: period.fencingToken, attempt: 1, signal: period.halt.signal };
        const items = normalise(await this.#options.trigger(event as Recorded<E>, context));
        if (items.length === 0) await this.#settleRedrive(period, letter, { ok: true });
        const group = { letter, remaining: items.length };
        for (const { key, payload } of items) {
          this.#add(period, { key, payload, itemId: key, event, position: undefined, redriveOf: undefined, group, failures: NO_FAILURES });
        }
      } catch (error) {
        await this.#settleRedrive(period, letter, { ok: false, attempts: [{ at: new Date(), error: describeError(error) }] });
      }
    }
    this.#pump(period);
  }

  async #settleRedrive(period: Period<P>, letter: DeadLetter, outcome: { ok: true } | { ok: false; attempts: FailedAttempt[] }): Promise<void> {
    try {
      await this.#deadLetters.settleRedrive(letter.id, outcome, period.fence);
    } catch (error) {
      // A newer leader claimed the checkpoint: it settles the letter; this node steps down.
      if (isEskitError(error, ErrorCode.Fenced)) period.fenced(error as FencedError);
      else this.#warn('settling a redrive failed; it will be picked up again', error);
    }
    period.redriving.delete(letter.id);
  }

  async #eventAt(position: number): Promise<RecordedEvent | undefined> {
    for await (const event of this.#store.readAll({ after: position - 1, limit: 1, raw: true })) {
      return event.position === position ? event : undefined;
    }
    return undefined;
  }

  #warn(message: string, error: unknown): void {
    this.#logger.warn({ automation: this.name, err: error }, `Automation "${this.name}": ${message}`);
  }
}

/** Ends an execute span; `error` undefined means the attempt succeeded. */
function endSpan(span: Span, error: unknown): void {
  if (error !== undefined) failSpan(span, error);
  span.end();
}

/** A trigger's result as checked items. */
function normalise<P>(result: TodoItem<P> | readonly TodoItem<P>[] | undefined | null): readonly TodoItem<P>[] {
  if (result === undefined || result === null) return [];
  const items = Array.isArray(result) ? (result as readonly TodoItem<P>[]) : [result as TodoItem<P>];
  for (const item of items) checkItem(item);
  return items;
}

function checkItem<P>(item: TodoItem<P>): TodoItem<P> {
  if (typeof item !== 'object' || item === null || typeof item.key !== 'string' || item.key.length === 0) {
    throw new InvalidArgumentError('trigger must return to-do items ({ key: non-empty string, payload }), an array of them, or nothing');
  }
  // Checked without building a copy: this runs for every item.
  if (item.key.includes('\u0000') || !item.key.isWellFormed()) {
    throw new InvalidArgumentError(`to-do key ${JSON.stringify(item.key)} contains NUL or a lone surrogate, which databases cannot store`);
  }
  return item;
}
