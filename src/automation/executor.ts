import type { Attributes, Span } from '@opentelemetry/api';
import type { DeadLetter, FailedAttempt } from '../core/dead-letter.js';
import { ErrorCode, TimeoutError, describeError, isEskitError } from '../core/errors.js';
import type { FencedError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { backoffDelay } from '../core/retry.js';
import type { RetryPolicy } from '../core/retry.js';
import { SpanName, TelemetryAttribute, activeTracer, callInSpan, failSpan, instruments, linksToEvents } from '../telemetry/telemetry.js';
import { originalError, withheldIfPersonal } from '../core/personal/withheld.js';
import { AttemptContext, isThenable } from './attempt.js';
import type { ExecuteContext } from './attempt.js';
import type { Item, Period, RunningAttempt, Slot } from './period.js';
import type { TodoItem } from './todo-items.js';
import type { TransactionalExecute } from './transactional.js';

/** What running one item's attempt ended with, for its key's run. */
type Outcome = 'done' | 'abandoned' | 'backoff';

/** What a synchronous attempt that succeeded resolves with (no error). */
const SUCCEEDED: Promise<unknown> = Promise.resolve(undefined);

export interface ExecutorOptions<P> {
  name: string;
  concurrency: number;
  timeoutMs: number;
  retry: RetryPolicy;
  recordWindow: number;
  /** The side effect; unused when `transactional` is set. */
  execute: (item: TodoItem<P>, context: ExecuteContext) => unknown;
  /** What `this` is in `execute`: the options object it was given in. */
  executeThis: unknown;
  transactional: TransactionalExecute<P> | undefined;
  /** An item left the to-do list (done or dead-lettered). */
  finish(period: Period<P>, item: Item<P>): void;
  /** After the last attempt: false when the period ended (or was fenced) before the letter was stored. */
  givenUp(period: Period<P>, item: Item<P>, error: unknown): Promise<boolean>;
  settleRedrive(period: Period<P>, letter: DeadLetter, outcome: { ok: true } | { ok: false; attempts: FailedAttempt[] }): Promise<void>;
  attributes: Attributes;
  logger: Logger;
}

/**
 * Runs a period's to-do items: keys in parallel up to the concurrency, the items of a key one after
 * another, each attempt timed out on a monotonic clock, retries after a backoff that holds no slot,
 * and finished items handed to the record window.
 */
export class Executor<P> {
  constructor(private readonly o: ExecutorOptions<P>) {}

  /**
   * Starts ready keys while there are free slots and the record window has room. A key is in exactly
   * one place: ready (in `readyKeys`), running (holding a slot), waiting out a backoff (a timer), or
   * waiting for a timed-out attempt to settle; its queue exists until its last item finished.
   */
  pump(period: Period<P>): void {
    while (!period.ended && period.running < this.o.concurrency && period.readyKeys.length > 0) {
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
        this.pump(period);
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
    return period.recorder.size + period.running + period.hung + (slotCounted ? 0 : 1) > this.o.recordWindow;
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
      const outcome = pending === SUCCEEDED && !item.redriveOf && !period.lost ? this.settled(period, item) : await this.#afterAttempt(period, key, item, attempt, pending);
      if (outcome !== 'done') return;
      queue.shift();
      this.o.finish(period, item);
      if (item.group && --item.group.remaining === 0) await this.o.settleRedrive(period, item.group.letter, { ok: true });
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
        await this.o.settleRedrive(period, item.redriveOf, { ok: true });
        return 'done';
      }
      // In a transaction, its completion was recorded with its side effect.
      return this.o.transactional ? 'done' : this.settled(period, item);
    }
    if (isEskitError(error, ErrorCode.Fenced)) {
      // A newer leader's token won downstream: not the item's fault, so neither retried nor
      // dead-lettered. It stays pending (holding the checkpoint) while this node steps down; the
      // next leadership runs it with a newer token.
      period.fenced(error as FencedError);
      return 'abandoned';
    }
    // The dead letter keeps what was thrown (sealed when the event holds personal data).
    item.failures = [...item.failures, { at: new Date(), error: describeError(originalError(error)) }];
    const permanent = isEskitError(error, ErrorCode.PermanentFailure);
    if (permanent || attempt >= this.o.retry.maxAttempts) {
      if (!(await this.o.givenUp(period, item, error))) return 'abandoned';
      // Recorded like a completion: a new leader must not run it (and dead-letter it) again.
      return item.redriveOf ? 'done' : this.settled(period, item);
    }
    instruments().handlerRetries.add(1, this.o.attributes);
    this.o.logger.warn(
      { automation: this.o.name, key: item.key, position: item.event.position, attempt, err: error },
      `Automation "${this.o.name}": execute failed; retrying`,
    );
    if (period.ended) return 'abandoned';
    const timer = setTimeout(() => {
      period.backoffs.delete(timer);
      if (period.ended) return;
      period.readyKeys.push(key);
      this.pump(period);
    }, backoffDelay(this.o.retry, attempt));
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
    const context = new AttemptContext(this.o.name, period, attempt, item.event, item.redriveOf !== undefined);
    // One root span per attempt, only when a tracer provider is installed (see src/telemetry).
    const tracer = activeTracer();
    const span = tracer?.startSpan(SpanName.Execute, { root: true, attributes: this.#executeAttributes(item, attempt), links: linksToEvents([item.event]) });
    let result: unknown;
    try {
      const todo: TodoItem<P> = { key: item.key, payload: item.payload };
      if (this.o.transactional) {
        const run = (): unknown => this.#inTransaction(this.o.transactional as TransactionalExecute<P>, period, item, todo, context);
        result = span ? callInSpan(span, run, undefined) : run();
      } else {
        result = span ? callInSpan(span, this.o.execute, this.o.executeThis, todo, context) : this.o.execute(todo, context);
      }
    } catch (error) {
      const failure = withheldIfPersonal(error ?? new Error('execute threw a nullish value'), [item.event], item.event.position);
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
        deadline: performance.now() + this.o.timeoutMs,
        expired: false,
        expire: () => {
          tracked.expired = true;
          expired = new TimeoutError(`Automation "${this.o.name}": execute of key "${item.key}"`, this.o.timeoutMs);
          AttemptContext.expire(context, expired);
          period.hung += 1;
          instruments().executeTimeouts.add(1, this.o.attributes);
          this.o.logger.warn(
            { automation: this.o.name, key: item.key, position: item.event.position, attempt, timeoutMs: this.o.timeoutMs },
            `Automation "${this.o.name}": the execute of key "${item.key}" (event at position ${item.event.position}) passed its ${this.o.timeoutMs} ms timeout; ` +
              'its signal fired. Its key waits until it settles; other keys go on.',
          );
          slot.release();
          this.pump(period);
        },
      };
      const settle = (error: unknown): void => {
        if (expired) period.hung -= 1;
        period.attempts.delete(tracked);
        const outcome = error !== undefined && expired ? expired : error === undefined ? undefined : withheldIfPersonal(error, [item.event], item.event.position);
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
    return transactional.run(this.o.name, record, todo, context, period.fence);
  }

  #executeAttributes(item: Item<P>, attempt: number): Attributes {
    return {
      [TelemetryAttribute.Automation]: this.o.name,
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
    const every = Math.max(5, Math.min(1000, Math.floor(this.o.timeoutMs / 10)));
    period.sweeper = setTimeout(() => {
      period.sweeper = undefined;
      const now = performance.now();
      for (const running of [...period.attempts]) if (!running.expired && running.deadline <= now) running.expire();
      this.#sweepTimeouts(period);
    }, every);
    period.sweeper.unref();
  }

  /** An item completed or was dead-lettered: made durable, unless the checkpoint passed it already. */
  settled(period: Period<P>, item: Item<P>): 'done' {
    if (period.recorder && item.position !== undefined && item.position > period.savedPosition) {
      period.recorder.finished({ position: item.position, itemId: item.itemId });
    }
    return 'done';
  }
}

/** Ends an execute span; `error` undefined means the attempt succeeded. */
function endSpan(span: Span, error: unknown): void {
  if (error !== undefined) failSpan(span, error);
  span.end();
}
