import type { Attributes, Span } from '@opentelemetry/api';
import { deadLetterFor } from '../core/dead-letter-checks.js';
import type { DeadLetterStore } from '../core/dead-letter.js';
import { unlessAborted } from '../core/deadline.js';
import { ErrorCode, HandlerFailedError, isEskitError } from '../core/errors.js';
import type { EventShape, Recorded } from '../core/event.js';
import type { Logger } from '../core/logger.js';
import { backoffDelay, delay } from '../core/retry.js';
import type { RetryPolicy } from '../core/retry.js';
import { addDeadLetter } from '../core/storable-letter.js';
import { originalError, withheldIfPersonal } from '../core/personal/withheld.js';
import { SpanName, TelemetryAttribute, activeTracer, callInSpan, failSpan, instruments, linksToEvents, recordFailure } from '../telemetry/telemetry.js';
import type { BatchHandler, FailureAction, HandlerContext, SubscriptionHandler } from './types.js';

export interface DeliveryOptions<E extends EventShape> {
  name: string;
  handler: SubscriptionHandler<E> | undefined;
  batchHandler: BatchHandler<E> | undefined;
  /** What `this` is in a handler: the options object it was given in (as before the split). */
  handlerThis: unknown;
  onHandlerFailure: FailureAction<E> | undefined;
  deadLetters: DeadLetterStore | undefined;
  retry: RetryPolicy;
  pollIntervalMs: number;
  drainTimeoutMs: number;
  /** Fires `drainTimeoutMs` after stop(): a handler still running is then abandoned. */
  drainExpired(): AbortSignal;
  attributes: Attributes;
  logger: Logger;
}

/**
 * Hands events to a subscription's handler: one at a time or in batches, retried with backoff, and
 * after the last attempt skipped (dead-lettered) or stopped at, as configured. Counts what it handled.
 */
export class Delivery<E extends EventShape> {
  /** Events handled since the subscription was created. */
  handled = 0;
  /** The span of the batch being handled, when tracing is on. */
  #span: Span | undefined;
  readonly #deadLetterAttributes: Attributes;

  constructor(private readonly o: DeliveryOptions<E>) {
    this.#deadLetterAttributes = Object.freeze({ ...o.attributes, [TelemetryAttribute.Stage]: 'handler' });
  }

  /**
   * Hands one batch to the handler (or the batch handler); `positions.handled` is told each position
   * handled (or committed by a batch handler), `positions.skipped` each one skipped after its failure.
   * Returns what ended it early: a failure, or a FencedError.
   */
  async deliver(
    batch: readonly Recorded<E>[],
    token: number | undefined,
    signal: AbortSignal,
    positions: { handled(position: number): void; skipped(position: number): void },
  ): Promise<{ error: unknown } | undefined> {
    const handledBefore = this.handled;
    const tracer = activeTracer();
    const span = tracer?.startSpan(SpanName.Handle, {
      root: true,
      attributes: {
        [TelemetryAttribute.Subscription]: this.o.name,
        [TelemetryAttribute.EventCount]: batch.length,
        [TelemetryAttribute.FirstPosition]: (batch[0] as Recorded<E>).position,
        [TelemetryAttribute.LastPosition]: (batch[batch.length - 1] as Recorded<E>).position,
        ...(token === undefined ? {} : { [TelemetryAttribute.FencingToken]: token }),
      },
      links: linksToEvents(batch),
    });
    this.#span = span;
    let last = (batch[0] as Recorded<E>).position - 1;
    let ended: { error: unknown } | undefined;
    try {
      if (this.o.batchHandler) {
        const result = await this.#handleBatch(batch, token, signal, (position) => {
          last = position;
          positions.handled(position);
        }, (position) => {
          last = position;
          positions.skipped(position);
        });
        if (result !== 'done' && result !== 'aborted') ended = result;
      } else {
        for (let index = 0; index < batch.length; index++) {
          const event = batch[index] as Recorded<E>;
          if (signal.aborted) break;
          const result = await this.#handle(event, token, signal);
          if (result === 'aborted') break;
          if (result !== 'done') {
            ended = result;
            break;
          }
          last = event.position;
          // The parts of a split stored event share its position: it is handled once the last is.
          if (!samePosition(batch, index + 1, event.position)) positions.handled(event.position);
        }
      }
      return ended;
    } catch (error) {
      if (span) failSpan(span, error);
      throw error;
    } finally {
      this.#span = undefined;
      // Per batch, not per event: even a no-op counter costs a call.
      const handled = this.handled - handledBefore;
      if (handled > 0) instruments().eventsHandled.add(handled, this.o.attributes);
      if (span) {
        // A handler's failure was recorded where it happened (#afterLastAttempt).
        if (ended && isEskitError(ended.error, ErrorCode.Fenced)) failSpan(span, ended.error);
        span.setAttribute(TelemetryAttribute.Position, last);
        span.end();
      }
    }
  }

  /**
   * Hands the batch to the batch handler, retrying it whole; a batch that keeps failing is replayed
   * one event at a time, so the failure is pinned on one event (then skipped or stopped at as
   * configured). `committed` is told each position the handler committed, `skipped` each one skipped.
   */
  async #handleBatch(
    batch: readonly Recorded<E>[],
    fencingToken: number | undefined,
    signal: AbortSignal,
    committed: (position: number) => void,
    skipped: (position: number) => void,
  ): Promise<'done' | 'aborted' | { error: unknown }> {
    const handler = this.o.batchHandler as BatchHandler<E>;
    let size = batch.length;
    for (let index = 0; index < batch.length; ) {
      const chunk = batch.slice(index, index + size);
      const last = chunk[chunk.length - 1] as Recorded<E>;
      let lastError: unknown;
      let attempts = 0;
      for (let attempt = 1; attempt <= this.o.retry.maxAttempts; attempt++) {
        if (signal.aborted) return 'aborted';
        attempts = attempt;
        try {
          const context: HandlerContext = { subscription: this.o.name, fencingToken, attempt, signal };
          const result = this.#span ? callInSpan(this.#span, handler, undefined, chunk, context) : handler(chunk, context);
          if (isThenable(result) && (await this.#abandonedAtDrain(result, `the batch handler (events ${chunk[0]?.position} to ${last.position})`))) return 'aborted';
          lastError = undefined;
          break;
        } catch (thrown) {
          if (signal.aborted) return 'aborted';
          const error = withheldIfPersonal(thrown, chunk, last.position);
          if (isEskitError(error, ErrorCode.Fenced)) return { error };
          lastError = error ?? new Error('the batch handler threw a nullish value');
          if (isEskitError(error, ErrorCode.PermanentFailure) || attempt === this.o.retry.maxAttempts) break;
          this.#retried(error, chunk.length === 1 ? last.position : undefined, attempt);
          try {
            await delay(backoffDelay(this.o.retry, attempt), signal);
          } catch {
            return 'aborted';
          }
        }
      }
      if (lastError === undefined) {
        this.handled += chunk.length;
        // A chunk replayed one event at a time can end inside a split stored event (its parts share
        // one position): that position is committed with its last part.
        if (!samePosition(batch, index + chunk.length, last.position)) committed(last.position);
        index += chunk.length;
        continue;
      }
      if (chunk.length > 1) {
        size = 1;
        continue;
      }
      const outcome = await this.#afterLastAttempt(last, lastError, attempts, fencingToken, signal);
      if (outcome !== 'done') return outcome;
      if (!samePosition(batch, index + 1, last.position)) skipped(last.position);
      index += 1;
    }
    return 'done';
  }

  async #handle(
    event: Recorded<E>,
    fencingToken: number | undefined,
    signal: AbortSignal,
  ): Promise<'done' | 'aborted' | { error: unknown }> {
    for (let attempt = 1; ; attempt++) {
      try {
        const context: HandlerContext = { subscription: this.o.name, fencingToken, attempt, signal };
        const handler = this.o.handler as SubscriptionHandler<E>;
        const result = this.#span ? callInSpan(this.#span, handler, this.o.handlerThis, event, context) : handler.call(this.o.handlerThis, event, context);
        if (isThenable(result) && (await this.#abandonedAtDrain(result, `the handler of the event at position ${event.position}`))) return 'aborted';
        this.handled += 1;
        return 'done';
      } catch (thrown) {
        if (signal.aborted) return 'aborted';
        const error = withheldIfPersonal(thrown, [event], event.position);
        // A newer token won downstream (or a view was rebuilt under this node): step down and lead again
        // from the checkpoint, as the batch path does; retrying or dead-lettering it would be wrong.
        if (isEskitError(error, ErrorCode.Fenced)) return { error };
        if (attempt >= this.o.retry.maxAttempts || isEskitError(error, ErrorCode.PermanentFailure)) return this.#afterLastAttempt(event, error, attempt, fencingToken, signal);
        this.#retried(error, event.position, attempt);
        this.o.logger.warn(
          { subscription: this.o.name, position: event.position, attempt, err: error },
          `Subscription "${this.o.name}": handler failed; retrying`,
        );
        try {
          await delay(backoffDelay(this.o.retry, attempt), signal);
        } catch {
          return 'aborted';
        }
      }
    }
  }

  /**
   * Awaits what a handler returned, unless stop()'s drain timeout passes first: then it is abandoned
   * (true), named in a warning, and its event is delivered again later. A handler that ignores its
   * signal must not hold stop() forever.
   */
  async #abandonedAtDrain(result: PromiseLike<unknown>, what: string): Promise<boolean> {
    if ((await unlessAborted(Promise.resolve(result), this.o.drainExpired(), ABANDONED)) !== ABANDONED) return false;
    this.#warnAbandoned(what);
    return true;
  }

  #warnAbandoned(what: string): void {
    instruments().workAbandoned.add(1, this.o.attributes);
    this.o.logger.warn(
      { subscription: this.o.name, drainTimeoutMs: this.o.drainTimeoutMs },
      `Subscription "${this.o.name}": ${what} was still running ${this.o.drainTimeoutMs} ms after stop(); abandoned it (its signal had fired). ` +
        'The checkpoint stays before it: it is delivered again later.',
    );
  }

  /** A failed attempt that will be tried again: counted, and recorded on the batch's span. */
  #retried(error: unknown, position: number | undefined, attempt: number): void {
    instruments().handlerRetries.add(1, this.o.attributes);
    if (this.#span) {
      recordFailure(this.#span, error, {
        [TelemetryAttribute.Attempt]: attempt,
        ...(position === undefined ? {} : { [TelemetryAttribute.Position]: position }),
      });
    }
  }

  async #afterLastAttempt(
    event: Recorded<E>,
    error: unknown,
    attempts: number,
    fencingToken: number | undefined,
    signal: AbortSignal,
  ): Promise<'done' | 'aborted' | { error: unknown }> {
    if (this.#span) failSpan(this.#span, error, { [TelemetryAttribute.Attempt]: attempts, [TelemetryAttribute.Position]: event.position });
    const onFailure = this.o.onHandlerFailure ?? (this.o.deadLetters ? this.#deadLetter : undefined);
    if (onFailure) {
      let decision: 'skip' | 'stop' | typeof ABANDONED;
      try {
        // Your callback gets what your handler threw (logs and spans get it withheld, see withheld.ts).
        decision = await unlessAborted(onFailure({ event, error: originalError(error), attempts, fencingToken, signal }), this.o.drainExpired(), ABANDONED);
      } catch (failureError) {
        // Stopping while the failure was being recorded: the event is delivered again later.
        if (signal.aborted) return 'aborted';
        // A newer leader claimed the checkpoint: this node's dead letter was refused; it steps down.
        if (isEskitError(failureError, ErrorCode.Fenced)) return { error: failureError };
        throw failureError;
      }
      if (decision === ABANDONED) {
        this.#warnAbandoned(`recording the failure of the event at position ${event.position}`);
        return 'aborted';
      }
      if (decision === 'skip') return 'done';
      if (signal.aborted) return 'aborted';
    }
    return { error: new HandlerFailedError(this.o.name, event.position, attempts, error) };
  }

  /** Stores a failed event in the dead-letter queue, retrying while the queue is down (until stop). */
  readonly #deadLetter: FailureAction<E> = async ({ event, error, attempts, fencingToken, signal }) => {
    const deadLetters = this.o.deadLetters as DeadLetterStore;
    // A stale leader's letter must not land after a newer leader handled the event.
    const fenced = fencingToken === undefined ? undefined : { fence: { checkpoint: this.o.name, fencingToken } };
    for (let attempt = 1; ; attempt++) {
      try {
        await addDeadLetter(deadLetters, deadLetterFor(this.o.name, 'handler', event, attempts, error), fenced);
        instruments().deadLetters.add(1, this.#deadLetterAttributes);
        this.o.logger.warn({ subscription: this.o.name, position: event.position, err: withheldIfPersonal(error, [event], event.position) }, `Subscription "${this.o.name}": event dead-lettered`);
        return 'skip';
      } catch (storeError) {
        if (isEskitError(storeError, ErrorCode.Fenced)) throw storeError;
        this.o.logger.warn({ subscription: this.o.name, err: storeError }, `Subscription "${this.o.name}": storing a dead letter failed; retrying`);
        await delay(Math.min(this.o.pollIntervalMs, backoffDelay(this.o.retry, attempt)), signal);
      }
    }
  };
}

/** What a wait given up at the drain timeout resolves with. */
const ABANDONED: unique symbol = Symbol('abandoned');

export function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as { then?: unknown } | null)?.then === 'function';
}

/** True when `batch[index]` is at `position`: another part of the same split stored event. */
function samePosition<E extends EventShape>(batch: readonly Recorded<E>[], index: number, position: number): boolean {
  return index < batch.length && (batch[index] as Recorded<E>).position === position;
}
