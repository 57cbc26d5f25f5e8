import type { Attributes } from '@opentelemetry/api';
import { deadLetterFor } from '../core/dead-letter-checks.js';
import type { DeadLetter, DeadLetterStore, FailedAttempt, NewDeadLetter } from '../core/dead-letter.js';
import { ErrorCode, describeError, isEskitError } from '../core/errors.js';
import type { FencedError } from '../core/errors.js';
import type { EventShape, Recorded } from '../core/event.js';
import type { Logger } from '../core/logger.js';
import { backoffDelay, delay } from '../core/retry.js';
import type { RetryPolicy } from '../core/retry.js';
import type { EventStore } from '../core/store.js';
import { addDeadLetter } from '../core/storable-letter.js';
import { isRedacted } from '../core/personal/types.js';
import { TelemetryAttribute, instruments } from '../telemetry/telemetry.js';
import { NO_FAILURES } from './period.js';
import type { Item, Period } from './period.js';
import { normalise } from './todo-items.js';
import type { Trigger, TriggerContext } from './todo-items.js';

/** Errors of an event the store's registry cannot read (a redrive of it fails instead of waiting). */
const NO_LONGER_DECODES: readonly string[] = [ErrorCode.EventValidation, ErrorCode.UnknownEventType, ErrorCode.CorruptEvent];

export interface DeadLetteringOptions<E extends EventShape, P> {
  name: string;
  deadLetters: DeadLetterStore;
  store: EventStore<E>;
  trigger: Trigger<E, P>;
  retry: RetryPolicy;
  pollIntervalMs: number;
  add(period: Period<P>, item: Item<P>): void;
  pump(period: Period<P>): void;
  warn(message: string, error: unknown): void;
  attributes: Attributes;
  logger: Logger;
}

/**
 * An automation's dead letters: storing what it gave up on (fenced by the leader's token, retried
 * while the queue is down), and running again what an operator redrives.
 */
export class DeadLettering<E extends EventShape, P> {
  constructor(private readonly o: DeadLetteringOptions<E, P>) {}

  /** After the last attempt: the dead-letter queue. False when the period ended (or was fenced) before it was stored. */
  async givenUp(period: Period<P>, item: Item<P>, error: unknown): Promise<boolean> {
    if (item.redriveOf) {
      await this.settleRedrive(period, item.redriveOf, { ok: false, attempts: [...item.failures] });
      return true;
    }
    // The same object (not a spread copy): it carries the event's keys, for sealing.
    const letter: NewDeadLetter = deadLetterFor(this.o.name, 'execute', item.event, item.failures.length, error, item);
    letter.attempts = [...item.failures];
    try {
      return await this.storeUntilStored(letter, period.halt.signal, period);
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
  async storeUntilStored(letter: NewDeadLetter, halt: AbortSignal | undefined, period: Period<P> | undefined): Promise<boolean> {
    for (let attempt = 1; ; attempt++) {
      try {
        await addDeadLetter(this.o.deadLetters, letter, period?.fence);
        instruments().deadLetters.add(1, { ...this.o.attributes, [TelemetryAttribute.Stage]: letter.stage });
        this.o.logger.warn(
          { automation: this.o.name, key: letter.key, position: letter.eventPosition, stage: letter.stage },
          `Automation "${this.o.name}": gave up after ${letter.attempts.length} attempt(s); dead-lettered`,
        );
        return true;
      } catch (error) {
        if (isEskitError(error, ErrorCode.Fenced)) throw error;
        this.o.warn('storing a dead letter failed; retrying', error);
        try {
          await delay(Math.min(this.o.pollIntervalMs * 4, backoffDelay(this.o.retry, attempt)), halt);
        } catch {
          if (letter.stage === 'trigger') throw error;
          return false;
        }
      }
    }
  }

  async pickUpRedrives(period: Period<P>): Promise<void> {
    let letters: DeadLetter[];
    try {
      letters = await this.o.deadLetters.list({ source: this.o.name, status: 'redrive', limit: 100 });
    } catch (error) {
      this.o.warn('reading redrive requests failed', error);
      return;
    }
    for (const letter of letters) {
      if (period.ended || period.redriving.has(letter.id)) continue;
      period.redriving.add(letter.id);
      let event: Recorded | undefined;
      try {
        event = await this.#eventAt(letter.eventPosition, letter.eventId);
      } catch (error) {
        if (NO_LONGER_DECODES.some((code) => isEskitError(error, code))) {
          // Waiting will not help: the registry no longer reads this event. Say so on the letter.
          await this.settleRedrive(period, letter, { ok: false, attempts: [{ at: new Date(), error: describeError(error) }] });
          continue;
        }
        // A tick's promise has no one to reject to (that would crash the process): a later tick retries.
        period.redriving.delete(letter.id);
        this.o.warn('reading a redriven event failed; it will be picked up again', error);
        continue;
      }
      if (!event) {
        await this.settleRedrive(period, letter, { ok: false, attempts: [{ at: new Date(), error: `the event at position ${letter.eventPosition} is no longer in the store (its stream was deleted or truncated): nothing to redrive; discard the letter (eskit dlq discard ${letter.id})` }] });
        continue;
      }
      if (letter.stage === 'execute' && isRedacted(letter.payload)) {
        // Sealed with the keys of a subject forgotten since: the item's payload is gone for good.
        await this.settleRedrive(period, letter, { ok: false, attempts: [{ at: new Date(), error: `the payload was erased (a subject of its event was forgotten): nothing to redrive; discard the letter (eskit dlq discard ${letter.id})` }] });
        continue;
      }
      if (letter.stage === 'execute') {
        this.o.add(period, { key: letter.key, payload: letter.payload as P, itemId: letter.key, event, position: undefined, redriveOf: letter, failures: NO_FAILURES });
        continue;
      }
      // A trigger (or handler) failure: run the trigger again; its items then run like any others, and
      // the letter goes only once they all finished (if this node stops first, the next one redoes it).
      try {
        const context: TriggerContext = { subscription: this.o.name, fencingToken: period.fencingToken, attempt: 1, signal: period.halt.signal };
        const items = normalise(await this.o.trigger(event as Recorded<E>, context));
        if (items.length === 0) await this.settleRedrive(period, letter, { ok: true });
        const group = { letter, remaining: items.length };
        for (const { key, payload } of items) {
          this.o.add(period, { key, payload, itemId: key, event, position: undefined, redriveOf: undefined, group, failures: NO_FAILURES });
        }
      } catch (error) {
        await this.settleRedrive(period, letter, { ok: false, attempts: [{ at: new Date(), error: describeError(error) }] });
      }
    }
    this.o.pump(period);
  }

  async settleRedrive(period: Period<P>, letter: DeadLetter, outcome: { ok: true } | { ok: false; attempts: FailedAttempt[] }): Promise<void> {
    try {
      await this.o.deadLetters.settleRedrive(letter.id, outcome, period.fence);
    } catch (error) {
      // A newer leader claimed the checkpoint: it settles the letter; this node steps down.
      if (isEskitError(error, ErrorCode.Fenced)) period.fenced(error as FencedError);
      else this.o.warn('settling a redrive failed; it will be picked up again', error);
    }
    period.redriving.delete(letter.id);
  }

  /**
   * The event as the trigger first got it: decoded by the store's registry (renames, upcasters,
   * splits). The parts of a split stored event share its position; the letter's event id picks one.
   */
  async #eventAt(position: number, id: string): Promise<Recorded | undefined> {
    for await (const event of this.o.store.readAll({ after: position - 1, limit: 1 })) {
      if (event.position !== position) return undefined;
      // One event per position, but the parts of a split share theirs: the letter's id says which part.
      if (event.part === undefined || event.id === id) return event;
    }
    return undefined;
  }
}
