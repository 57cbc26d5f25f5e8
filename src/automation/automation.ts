import type { Attributes, Span } from '@opentelemetry/api';
import { milliseconds, positiveInteger } from '../core/validate.js';
import type { CheckpointStore } from '../core/checkpoint.js';
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
import { Subscription } from '../subscription/subscription.js';
import type { OutstandingWork, StartFrom, SubscriptionStatus } from '../subscription/subscription.js';
import { SpanName, TelemetryAttribute, activeTracer, callInSpan, failSpan, instruments, linksToEvents } from '../telemetry/telemetry.js';

/** One thing to do because of an event. Items with the same key run one at a time, in event order. */
export interface TodoItem<P = unknown> {
  key: string;
  payload: P;
}

export interface ExecuteContext {
  automation: string;
  /** The lease's token while leader election is on: pass it to systems that can check it. */
  fencingToken: number | undefined;
  /** 1 on the first attempt. */
  attempt: number;
  /**
   * Fires when the attempt timed out or leadership was lost: stop the side effect if you can. Made
   * when first read (a getter of the context, so `{ ...context }` does not carry it): pass
   * `context.signal` itself.
   */
  readonly signal: AbortSignal;
  /** The event that produced the item. */
  event: RecordedEvent;
  /** True when an operator asked to run a dead letter again. */
  redrive: boolean;
}

export type Trigger<E extends EventShape, P> = (
  event: Recorded<E>,
) => TodoItem<P> | readonly TodoItem<P>[] | undefined | null | Promise<TodoItem<P> | readonly TodoItem<P>[] | undefined | null>;

export interface AutomationOptions<E extends EventShape, P> {
  /** Names the checkpoint, the lock and the dead letters. */
  name: string;
  store: EventStore<E>;
  checkpoints: CheckpointStore;
  deadLetters: DeadLetterStore;
  /** Without it, a crash re-runs every item after the checkpoint, completed or not. */
  completions?: CompletionStore;
  /** Turns an event into to-do items (none is fine). A trigger that keeps throwing dead-letters the event. */
  trigger: Trigger<E, P>;
  /**
   * Runs the side effect. Throw `PermanentFailure` to skip the remaining retries. A `FencedError` (the
   * downstream system saw a newer `ctx.fencingToken`) makes this node step down: the item is neither
   * retried nor dead-lettered here, and runs again under the next leadership.
   */
  execute: (item: TodoItem<P>, context: ExecuteContext) => unknown;
  types?: readonly E['type'][];
  leaderLock?: LockRegistry;
  /** Items of different keys running at once. Default 8. */
  concurrency?: number;
  /** Per attempt. Default 30 s. */
  timeoutMs?: number;
  /** Retries of `execute`. Default 5 attempts, 200 ms doubling up to 30 s, full jitter. */
  retry?: Partial<RetryPolicy>;
  /** Retries of `trigger` before its event is dead-lettered. Default 3 attempts. */
  triggerRetry?: Partial<RetryPolicy>;
  /** Reading pauses while this many items wait. Default 1000. */
  maxPending?: number;
  batchSize?: number;
  pollIntervalMs?: number;
  startFrom?: StartFrom;
  logger?: Logger;
}

export interface AutomationStatus extends SubscriptionStatus {
  /** Items triggered and not finished on this node. */
  pending: number;
  /** Items executing right now. */
  running: number;
}

interface Item<P> {
  key: string;
  payload: P;
  /** Unique within its event: the key plus its occurrence among the event's items. */
  itemId: string;
  event: RecordedEvent;
  /** The position the item holds the checkpoint at; undefined for redrives (already behind it). */
  position: number | undefined;
  redriveOf: DeadLetter | undefined;
  /** For items of a redriven trigger letter: the letter is settled once all of them finished. */
  group?: { letter: DeadLetter; remaining: number };
  /** NO_FAILURES until the first failure (most items never fail: no array each). */
  failures: readonly FailedAttempt[];
}

interface RunningAttempt {
  deadline: number;
  expire(): void;
}

/** What an attempt that succeeded synchronously resolves with (no error). */
const SUCCEEDED: Promise<unknown> = Promise.resolve(undefined);
const NO_FAILURES: readonly FailedAttempt[] = Object.freeze([]);

/** One leadership period's to-do list. A new period starts from scratch at the checkpoint. */
class Period<P> {
  readonly queues = new Map<string, Item<P>[]>();
  readonly readyKeys: string[] = [];
  running = 0;
  pending = 0;
  /**
   * Positions with unfinished items, ascending (events arrive in order), from `positionsHead` on (a
   * head index, not `shift()`: asked for after every event, shifting was the automation's hottest
   * line), and their counts.
   */
  positions: number[] = [];
  positionsHead = 0;
  readonly counts = new Map<number, number>();
  readonly inFlight = new Set<Promise<void>>();
  readonly redriving = new Set<string>();
  /** Completed items not yet recorded, above the saved checkpoint. */
  unrecorded: Array<{ position: number; itemId: string }> = [];
  /** The latest completion write: writes run one after another (see #recordCompletions). */
  recording: Promise<void> = Promise.resolve();
  savedPosition: number;
  /** The saved position when completions were last recorded: whether the checkpoint has moved since. */
  savedAtLastRecord: number;
  /** Aborts backoff waits and capacity waits (stop or loss). */
  readonly halt = new AbortController();
  /** Aborts the side effects themselves (loss only: a stop lets them finish). */
  readonly lose = new AbortController();
  timer: NodeJS.Timeout | undefined;
  readonly attempts = new Set<RunningAttempt>();
  sweeper: NodeJS.Timeout | undefined;

  constructor(
    readonly fencingToken: number | undefined,
    readonly completed: Set<string>,
    position: number,
    /** Ends the leadership: a side effect met a newer fencing token downstream. */
    readonly fenced: (error: FencedError) => void,
  ) {
    this.savedPosition = position;
    this.savedAtLastRecord = position;
  }

  /** `halt` aborted / `lose` aborted, as fields: read for every item, where a signal's getter shows in profiles. */
  ended = false;
  lost = false;

  end(reason: 'stopped' | 'lost', name: string): void {
    if (reason === 'lost') {
      this.lost = true;
      this.lose.abort(new Error(`Automation "${name}" lost leadership`));
    }
    this.ended = true;
    this.halt.abort(new Error(`Automation "${name}" is stopping`));
  }
}

const defaultRetry: RetryPolicy = { maxAttempts: 5, initialDelayMs: 200, maxDelayMs: 30_000 };
const defaultTriggerRetry: RetryPolicy = { maxAttempts: 3, initialDelayMs: 100, maxDelayMs: 5_000 };

/**
 * Event → to-do items → side effects, with retries, per-key order, a dead-letter queue, and a
 * checkpoint that never passes an item that has not finished (run, or dead-lettered).
 *
 * Delivery: `execute` runs at least once per item. An item whose completion was recorded (recording
 * happens at every checkpoint save and poll tick) is not run again after a crash; one that completed
 * after the last record may be.
 */
export class Automation<E extends EventShape = EventShape, P = unknown> {
  readonly name: string;
  readonly #options: AutomationOptions<E, P>;
  readonly #subscription: Subscription<E>;
  readonly #retry: RetryPolicy;
  readonly #concurrency: number;
  readonly #timeoutMs: number;
  readonly #maxPending: number;
  readonly #pollIntervalMs: number;
  readonly #logger: Logger;
  readonly #progressListeners = new Set<() => void>();
  #period: Period<P> | undefined;
  #capacityWaiters: Array<() => void> = [];
  /** Metric attributes, made once. */
  readonly #attributes: Attributes;

  constructor(options: AutomationOptions<E, P>) {
    if (typeof options.trigger !== 'function' || typeof options.execute !== 'function') {
      throw new InvalidArgumentError(`Automation "${String(options.name)}" needs trigger and execute functions.`);
    }
    if (!options.deadLetters) throw new InvalidArgumentError(`Automation "${String(options.name)}" needs a dead-letter store (deadLetters).`);
    this.name = options.name;
    this.#options = options;
    this.#retry = retryPolicy(options.retry, defaultRetry);
    this.#concurrency = positiveInteger('concurrency', options.concurrency ?? 8);
    this.#timeoutMs = milliseconds('timeoutMs', options.timeoutMs ?? 30_000);
    this.#maxPending = positiveInteger('maxPending', options.maxPending ?? 1000);
    this.#pollIntervalMs = milliseconds('pollIntervalMs', options.pollIntervalMs ?? 500);
    this.#logger = options.logger ?? consoleLogger();
    this.#attributes = Object.freeze({ [TelemetryAttribute.Automation]: this.name });

    const work: OutstandingWork = {
      begin: (context) => this.#begin(context.position, context.fencingToken, context.fenced),
      earliestPending: () => this.#earliestPending(),
      onProgress: (listener) => {
        this.#progressListeners.add(listener);
        return () => this.#progressListeners.delete(listener);
      },
      checkpointed: (position) => this.#checkpointed(position),
      end: (reason) => this.#end(reason),
      // After the stop's checkpoint save, whether it happened or not: what it did not cover is recorded.
      finished: () => this.#recordCompletions(this.#period, 'all'),
    };
    this.#subscription = new Subscription<E>({
      name: options.name,
      store: options.store,
      checkpoints: options.checkpoints,
      types: options.types,
      batchSize: options.batchSize,
      startFrom: options.startFrom,
      pollIntervalMs: this.#pollIntervalMs,
      leaderLock: options.leaderLock,
      logger: this.#logger,
      retry: retryPolicy(options.triggerRetry, defaultTriggerRetry),
      outstandingWork: work,
      handler: (event, context) => this.#enqueue(event, context.signal),
      onHandlerFailure: async ({ event, error, attempts, signal }) => {
        await this.#deadLetterUntilStored(deadLetterFor(this.name, 'trigger', event, attempts, error), signal);
        return 'skip';
      },
    });
  }

  /** Starts in the background (standing by while another node holds the lock). */
  start(): Promise<void> {
    return this.#subscription.start();
  }

  /** Lets running side effects finish, records them, saves the checkpoint, releases leadership. */
  stop(): Promise<void> {
    return this.#subscription.stop();
  }

  async whenStopped(): Promise<AutomationStatus> {
    await this.#subscription.whenStopped();
    return this.status();
  }

  async status(): Promise<AutomationStatus> {
    const status = await this.#subscription.status();
    return { ...status, pending: this.#period?.pending ?? 0, running: this.#period?.running ?? 0 };
  }

  // ---- leadership period -------------------------------------------------------------------------

  async #begin(position: number, fencingToken: number | undefined, fenced: (error: FencedError) => void): Promise<void> {
    const { completions } = this.#options;
    let completed = new Set<string>();
    if (completions) {
      completed = await completions.completedAfter(this.name, position);
      completions.prune(this.name, position).catch((error: unknown) => this.#warn('pruning completion records failed', error));
    }
    const period = new Period<P>(fencingToken, completed, position, fenced);
    this.#period = period;
    const tick = (): void => {
      if (period.ended) return;
      // A timer's promise has nobody to reject to: a failure here would crash the process.
      void Promise.all([this.#recordCompletions(period), this.#pickUpRedrives(period)])
        .catch((error: unknown) => this.#warn('a poll tick failed; the next one tries again', error))
        .finally(() => {
          if (!period.ended) period.timer = setTimeout(tick, this.#pollIntervalMs);
        });
    };
    period.timer = setTimeout(tick, this.#pollIntervalMs);
  }

  async #end(reason: 'stopped' | 'lost'): Promise<void> {
    const period = this.#period;
    if (!period) return;
    clearTimeout(period.timer);
    period.end(reason, this.name);
    this.#wakeCapacityWaiters();
    // A stop drains what runs; a loss abandons it (the new leader redoes what was not checkpointed).
    if (reason === 'stopped') await Promise.allSettled([...period.inFlight]);
    // The period stays current until the next begins: the runner's final checkpoint save asks it for
    // the items still pending (abandoned in a backoff wait, or never started), which must hold it back.
  }

  #checkpointed(position: number): void {
    const period = this.#period;
    if (!period) return;
    period.savedPosition = position;
    if (period.unrecorded.length > 0) period.unrecorded = period.unrecorded.filter((c) => c.position > position);
  }

  /**
   * Writes completion records for items above the saved checkpoint (below it they are covered). At a
   * tick, items below the earliest pending one are left to the checkpoint while it moves (it did since
   * the last tick): its next save covers them all with one row, where catching up would write
   * thousands of completion rows a tick. They stay listed until a save passes them, so if the
   * checkpoint stops moving, the next tick records them. A stop records what its final save did not
   * cover ('all', after that save), so a save that failed or was skipped (leadership lost while
   * draining) leaves nothing unrecorded.
   *
   * One write at a time per period: the stop's must wait for a tick's still in flight, which would
   * otherwise land after the lease is released (the next leader re-running its items), or fail with
   * no write after it to take its items back.
   */
  #recordCompletions(period: Period<P> | undefined, which: 'uncoverable' | 'all' = 'uncoverable'): Promise<void> {
    if (!this.#options.completions || !period) return Promise.resolve();
    const write = period.recording.then(() => this.#writeCompletions(period, which));
    period.recording = write.catch(() => undefined);
    return write;
  }

  async #writeCompletions(period: Period<P>, which: 'uncoverable' | 'all'): Promise<void> {
    const completions = this.#options.completions as CompletionStore;
    const saveComing = which === 'uncoverable' && period.savedPosition !== period.savedAtLastRecord;
    period.savedAtLastRecord = period.savedPosition;
    const covered = saveComing ? (this.#earliestPending() ?? Number.POSITIVE_INFINITY) : Number.NEGATIVE_INFINITY;
    const batch: Array<{ position: number; itemId: string }> = [];
    const left: Array<{ position: number; itemId: string }> = [];
    for (const completion of period.unrecorded) {
      if (completion.position <= period.savedPosition) continue;
      (completion.position < covered ? left : batch).push(completion);
    }
    period.unrecorded = left;
    if (batch.length === 0) return;
    try {
      await completions.markCompleted(this.name, batch);
    } catch (error) {
      // Not fatal: without the record an item may run again after a crash (at least once).
      period.unrecorded.push(...batch);
      this.#warn('recording completed items failed; will retry', error);
    }
  }

  #earliestPending(): number | undefined {
    const period = this.#period;
    if (!period) return undefined;
    const { positions, counts } = period;
    let head = period.positionsHead;
    while (head < positions.length && !counts.has(positions[head] as number)) head++;
    if (head > 1024 && head * 2 > positions.length) {
      period.positions = positions.slice(head);
      head = 0;
    }
    period.positionsHead = head;
    return period.positions[head];
  }

  // ---- triggering ------------------------------------------------------------------------------

  /** The subscription's handler: trigger, queue the items, start them. Synchronous unless it must wait. */
  #enqueue(event: Recorded<E>, signal: AbortSignal): void | Promise<void> {
    const period = this.#period;
    if (!period) return;
    const triggered = this.#options.trigger(event);
    if (isThenable(triggered)) return Promise.resolve(triggered).then((result) => this.#queue(period, event, result, signal));
    return this.#queue(period, event, triggered, signal);
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
    if (item.position !== undefined) {
      const count = period.counts.get(item.position);
      if (count === undefined) period.positions.push(item.position);
      period.counts.set(item.position, (count ?? 0) + 1);
    }
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
    if (item.position !== undefined) {
      const count = (period.counts.get(item.position) ?? 1) - 1;
      if (count === 0) period.counts.delete(item.position);
      else period.counts.set(item.position, count);
    }
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

  /** Starts keys while there are free slots. Each key runs its items one after another. */
  #pump(period: Period<P>): void {
    while (!period.ended && period.running < this.#concurrency && period.readyKeys.length > 0) {
      const key = period.readyKeys.shift() as string;
      period.running += 1;
      const run = this.#runKey(period, key).finally(() => {
        period.running -= 1;
        period.inFlight.delete(run);
        this.#pump(period);
      });
      period.inFlight.add(run);
    }
  }

  async #runKey(period: Period<P>, key: string): Promise<void> {
    const queue = period.queues.get(key) as Item<P>[];
    while (queue.length > 0) {
      const item = queue[0] as Item<P>;
      // The common case, a synchronous side effect that succeeds at once, costs no promise at all.
      const first = period.ended ? undefined : this.#attempt(period, item, item.failures.length + 1);
      const outcome =
        first === SUCCEEDED && !item.redriveOf && !period.lost
          ? this.#settled(period, item)
          : await this.#runItem(period, item, first);
      // Abandoned: the item stays pending (holding the checkpoint) until this period ends.
      if (outcome === 'abandoned') return;
      queue.shift();
      this.#finish(period, item);
      if (item.group && --item.group.remaining === 0) await this.#settleRedrive(period, item.group.letter, { ok: true });
    }
    period.queues.delete(key);
  }

  /** Runs the item to its end (success, or dead letter), retrying; `first` is an attempt already started. */
  async #runItem(period: Period<P>, item: Item<P>, first: Promise<unknown> | undefined): Promise<'done' | 'abandoned'> {
    for (let attempt = item.failures.length + 1; ; attempt++) {
      if (period.ended) return 'abandoned';
      const error = await (attempt === item.failures.length + 1 && first ? first : this.#attempt(period, item, attempt));
      first = undefined;
      if (error === undefined) {
        if (period.lost) return 'abandoned';
        if (item.redriveOf) {
          await this.#settleRedrive(period, item.redriveOf, { ok: true });
          return 'done';
        }
        return this.#settled(period, item);
      }
      if (period.lost) return 'abandoned';
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
      try {
        await delay(backoffDelay(this.#retry, attempt), period.halt.signal);
      } catch {
        return 'abandoned';
      }
    }
  }

  /**
   * One attempt; resolves with the error, or undefined on success. Never waits past the timeout.
   * Cheap on the hot path: the context's signal is only built when `execute` reads it, and timeouts
   * are found by one sweep timer per period rather than a timer per attempt.
   */
  #attempt(period: Period<P>, item: Item<P>, attempt: number): Promise<unknown> {
    const context = new AttemptContext(this.name, period, attempt, item.event, item.redriveOf !== undefined);
    // One root span per attempt, only when a tracer provider is installed (see src/telemetry).
    const tracer = activeTracer();
    const span = tracer?.startSpan(SpanName.Execute, { root: true, attributes: this.#executeAttributes(item, attempt), links: linksToEvents([item.event]) });
    let result: unknown;
    try {
      const todo: TodoItem<P> = { key: item.key, payload: item.payload };
      result = span ? callInSpan(span, this.#options.execute, this.#options, todo, context) : this.#options.execute(todo, context);
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
      let settled = false;
      const tracked: RunningAttempt = {
        deadline: Date.now() + this.#timeoutMs,
        expire: () => {
          const expired = new TimeoutError(`Automation "${this.name}": execute of key "${item.key}"`, this.#timeoutMs);
          AttemptContext.expire(context, expired);
          settle(expired);
        },
      };
      const settle = (outcome: unknown): void => {
        if (settled) return;
        settled = true;
        period.attempts.delete(tracked);
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

  /** Keeps one timer per period while attempts run; it expires those past their deadline. */
  #sweepTimeouts(period: Period<P>): void {
    if (period.sweeper || period.attempts.size === 0) return;
    const every = Math.max(5, Math.min(1000, Math.floor(this.#timeoutMs / 10)));
    period.sweeper = setTimeout(() => {
      period.sweeper = undefined;
      const now = Date.now();
      for (const running of [...period.attempts]) if (running.deadline <= now) running.expire();
      this.#sweepTimeouts(period);
    }, every);
  }

  /** Remembers an item that completed or was dead-lettered, to record it unless the checkpoint passes it first. */
  #settled(period: Period<P>, item: Item<P>): 'done' {
    if (this.#options.completions && item.position !== undefined && item.position > period.savedPosition) {
      period.unrecorded.push({ position: item.position, itemId: item.itemId });
    }
    return 'done';
  }

  /** After the last attempt: the dead-letter queue. False when the period ended before it was stored. */
  async #givenUp(period: Period<P>, item: Item<P>, error: unknown): Promise<boolean> {
    if (item.redriveOf) {
      await this.#settleRedrive(period, item.redriveOf, { ok: false, attempts: [...item.failures] });
      return true;
    }
    const letter: NewDeadLetter = {
      ...deadLetterFor(this.name, 'execute', item.event, item.failures.length, error, item),
      attempts: [...item.failures],
    };
    return this.#deadLetterUntilStored(letter, period.halt.signal);
  }


  /**
   * Stores a dead letter, retrying while the dead-letter store is down: the item keeps holding the
   * checkpoint meanwhile, so nothing is lost. False when stopped before it was stored.
   */
  async #deadLetterUntilStored(letter: NewDeadLetter, halt: AbortSignal | undefined): Promise<boolean> {
    for (let attempt = 1; ; attempt++) {
      try {
        await addDeadLetter(this.#options.deadLetters, letter);
        instruments().deadLetters.add(1, { ...this.#attributes, [TelemetryAttribute.Stage]: letter.stage });
        this.#logger.warn(
          { automation: this.name, key: letter.key, position: letter.eventPosition, stage: letter.stage },
          `Automation "${this.name}": gave up after ${letter.attempts.length} attempt(s); dead-lettered`,
        );
        return true;
      } catch (error) {
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
      letters = await this.#options.deadLetters.list({ source: this.name, status: 'redrive', limit: 100 });
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
        const items = normalise(await this.#options.trigger(event as Recorded<E>));
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
      await this.#options.deadLetters.settleRedrive(letter.id, outcome);
    } catch (error) {
      this.#warn('settling a redrive failed; it will be picked up again', error);
    }
    period.redriving.delete(letter.id);
  }

  async #eventAt(position: number): Promise<RecordedEvent | undefined> {
    for await (const event of this.#options.store.readAll({ after: position - 1, limit: 1, raw: true })) {
      return event.position === position ? event : undefined;
    }
    return undefined;
  }

  #warn(message: string, error: unknown): void {
    this.#logger.warn({ automation: this.name, err: error }, `Automation "${this.name}": ${message}`);
  }
}

/**
 * What `execute` gets. A class, not a literal with a getter: one is made per attempt, and the signal
 * (an AbortController and AbortSignal.any) only when `execute` reads it.
 */
class AttemptContext implements ExecuteContext {
  #signal: AbortSignal | undefined;
  #timeout: AbortController | undefined;
  #expired: Error | undefined;
  readonly #lose: AbortSignal;
  readonly fencingToken: number | undefined;

  constructor(
    readonly automation: string,
    period: { readonly fencingToken: number | undefined; readonly lose: AbortController },
    readonly attempt: number,
    readonly event: RecordedEvent,
    readonly redrive: boolean,
  ) {
    this.fencingToken = period.fencingToken;
    this.#lose = period.lose.signal;
  }

  get signal(): AbortSignal {
    if (!this.#signal) {
      this.#timeout = new AbortController();
      if (this.#expired) this.#timeout.abort(this.#expired);
      this.#signal = AbortSignal.any([this.#lose, this.#timeout.signal]);
    }
    return this.#signal;
  }

  /** The attempt timed out: fires the signal if `execute` took it (or when it does). Static: not on the context users see. */
  static expire(context: AttemptContext, error: Error): void {
    context.#expired = error;
    context.#timeout?.abort(error);
  }
}

/** Ends an execute span; `error` undefined means the attempt succeeded. */
function endSpan(span: Span, error: unknown): void {
  if (error !== undefined) failSpan(span, error);
  span.end();
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as { then?: unknown } | null)?.then === 'function';
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

