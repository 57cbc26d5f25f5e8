// A SQL view's rebuild (replay into shadow tables, catch up, swap in), and the way a batch applied
// outside the live runner (a rebuild's, or a partition count change's catch-up) pins a failure on
// one event and skips it or stops, as the live view would.
import { randomUUID } from 'node:crypto';
import { deadLetterFor } from '../core/dead-letter-checks.js';
import type { DeadLetter, DeadLetterStore } from '../core/dead-letter.js';
import { ErrorCode, isEskitError } from '../core/errors.js';
import type { EventShape, Recorded } from '../core/event.js';
import type { Logger } from '../core/logger.js';
import { backoffDelay, delay } from '../core/retry.js';
import type { RetryPolicy } from '../core/retry.js';
import { addDeadLetter } from '../core/storable-letter.js';
import { withheldIfPersonal } from '../core/personal/withheld.js';
import type { EventStore } from '../core/store.js';
import type { SqlViewBackend } from '../core/view-backend.js';
import type { FailureAction } from '../subscription/subscription.js';
import { instruments, TelemetryAttribute } from '../telemetry/telemetry.js';
import type { RebuildProgress } from './types.js';

export interface RebuildOptions {
  /** Called as events are applied to the shadow tables (for a progress bar). */
  onProgress?: (progress: RebuildProgress) => void;
  /** Stops the rebuild; the shadow tables are dropped and the live view stays as it was. */
  signal?: AbortSignal;
  /** Events per shadow transaction (each commits the shadow's own checkpoint too). Default 1000. */
  batchSize?: number;
  /**
   * Drops the shadow tables a rebuild whose process died left behind, and starts from the beginning
   * of the log. Default false: such a rebuild is resumed where its shadow checkpoint says, if its
   * shadow was built with the same setup, types and evolve source text. Pass true when evolve's
   * behaviour changed in a way its source text does not show (a helper it calls, a value it closes over).
   */
  fresh?: boolean;
}

export interface RebuildResult {
  /** The checkpoint the rebuilt view was swapped in at. */
  position: number;
  /** Events the rebuilt view was built from: those a resumed rebuild found in the shadow tables count too. */
  events: number;
  /** The shadow tables' checkpoint a resumed rebuild went on from; 0 when it started from the beginning. */
  resumedFrom: number;
  /** Incremented by every swap. */
  generation: number;
  durationMs: number;
}

/** What an event that keeps failing outside the live runner meets: the view's own failure handling. */
export interface PinnedFailures<E extends EventShape> {
  view: string;
  retry: RetryPolicy;
  onHandlerFailure: FailureAction<E> | undefined;
  deadLetters: DeadLetterStore | undefined;
  logger: Logger;
  signal?: AbortSignal | undefined;
  /** The dead letters' source: the view, or the lane whose events these are. */
  source: string;
  /** What to throw when the event is not skipped. */
  fail(event: Recorded<E>, error: unknown, attempts: number): Error;
  /** What is going on, for the log line of a skipped event ('rebuild', ...). */
  doing: string;
}

/**
 * Applies a batch with `apply`; a failing batch is replayed one event at a time (with `retry`) to pin
 * the failure on one event, which is then skipped (dead-lettered once, or `onHandlerFailure` said
 * 'skip') or thrown. A fenced write (`ESKIT_FENCED`) is thrown at once: another rebuild or a swap won.
 */
export async function applyPinned<E extends EventShape>(
  events: readonly Recorded<E>[],
  apply: (events: readonly Recorded<E>[]) => Promise<void>,
  o: PinnedFailures<E>,
): Promise<void> {
  if (events.length > 1) {
    try {
      await apply(events);
      return;
    } catch (error) {
      if (isEskitError(error, ErrorCode.Fenced)) throw error;
    }
  }
  for (const event of events) {
    for (let attempt = 1; ; attempt++) {
      try {
        await apply([event]);
        break;
      } catch (error) {
        if (isEskitError(error, ErrorCode.Fenced)) throw error;
        if (attempt < o.retry.maxAttempts && !isEskitError(error, ErrorCode.PermanentFailure)) {
          await delay(backoffDelay(o.retry, attempt), o.signal);
          continue;
        }
        await skipOrFail(event, error, attempt, o);
        break;
      }
    }
  }
}

async function skipOrFail<E extends EventShape>(event: Recorded<E>, thrown: unknown, attempts: number, o: PinnedFailures<E>): Promise<void> {
  const error = withheldIfPersonal(thrown, [event], event.position);
  if (o.onHandlerFailure) {
    if ((await o.onHandlerFailure({ event, error: thrown, attempts, fencingToken: undefined, signal: new AbortController().signal })) === 'skip') return;
    throw o.fail(event, error, attempts);
  }
  if (!o.deadLetters) throw o.fail(event, error, attempts);
  // A rebuild replays what the live view may have dead-lettered already: one letter per event.
  if (!(await deadLettered(o.deadLetters, o.source, event.position, event.id))) {
    await addDeadLetter(o.deadLetters, deadLetterFor(o.source, 'handler', event, attempts, error));
    instruments().deadLetters.add(1, { [TelemetryAttribute.Subscription]: o.source, [TelemetryAttribute.Stage]: 'handler' });
  }
  o.logger.warn({ view: o.view, position: event.position, err: error }, `View "${o.view}": ${o.doing} skipped a failing event (dead-lettered)`);
}

/** By position and event id: the parts of a split stored event share a position, and each has its own letter. */
async function deadLettered(deadLetters: DeadLetterStore, source: string, position: number, eventId: string): Promise<boolean> {
  let afterId: string | undefined;
  for (;;) {
    const page: DeadLetter[] = await deadLetters.list({ source, limit: 500, afterId });
    if (page.some((letter) => letter.eventPosition === position && letter.eventId === eventId)) return true;
    if (page.length < 500) return false;
    afterId = (page[page.length - 1] as DeadLetter).id;
  }
}

export interface RebuildContext<E extends EventShape> {
  view: string;
  store: EventStore<E>;
  backend: SqlViewBackend<E>;
  types: readonly E['type'][] | undefined;
  category: string | undefined;
  version: number;
  /** The checkpoints of the rebuilder's own lanes, which the swap writes last. */
  checkpoints: readonly string[];
  failures: Omit<PinnedFailures<E>, 'signal' | 'source' | 'fail' | 'doing'>;
  /** Shared with the view's status: what the rebuild got through. */
  progress: RebuildProgress;
  report(): void;
  fail(event: Recorded<E>, error: unknown): Error;
}

/**
 * Replays every event into shadow tables (or, resuming, those after the shadow's checkpoint), catches
 * up with the head round after round, then swaps them in (see SqlView.rebuild). Drops the shadow
 * tables when it does not get to the swap; only a process that dies leaves them to be resumed.
 */
export async function rebuildView<E extends EventShape>(
  c: RebuildContext<E>,
  options: { batchSize: number; signal: AbortSignal | undefined; fresh: boolean },
): Promise<RebuildResult> {
  const { backend, store, progress } = c;
  const { batchSize, signal } = options;
  const started = performance.now();
  const rebuildId = randomUUID();
  let generation: number | undefined;
  let swapped = false;
  const failures: PinnedFailures<E> = { ...c.failures, signal, source: c.view, doing: 'rebuild', fail: (event, error) => c.fail(event, error) };
  try {
    signal?.throwIfAborted();
    await backend.ensureSetup(c.version);
    const start = await backend.beginRebuild(rebuildId, { fresh: options.fresh });
    const shadow = (generation = start.generation);
    let position = start.resumeFrom;
    if (position > 0) {
      // The bar then shows how far the rebuild really is, not how much this process did.
      progress.done = await backend.countRelevant(0, position);
      c.failures.logger.info(
        { view: c.view, position, events: progress.done },
        `View "${c.view}": resuming a rebuild that died from its shadow tables' checkpoint at position ${position} (${progress.done} events in them)`,
      );
    }
    for (;;) {
      const head = await store.headPosition();
      progress.total = progress.done + (await backend.countRelevant(position, head));
      c.report();
      for (;;) {
        signal?.throwIfAborted();
        const batch: Recorded<E>[] = [];
        for await (const event of store.readAll({ after: position, limit: batchSize, types: c.types, category: c.category })) batch.push(event);
        if (batch.length > 0) {
          await applyPinned(batch, (events) => backend.applyShadow(events, rebuildId, shadow), failures);
          position = (batch[batch.length - 1] as Recorded<E>).position;
          progress.done += batch.length;
          progress.total = Math.max(progress.total, progress.done);
          c.report();
          // A synchronous driver (SQLite) would otherwise hold the event loop for the whole replay.
          await new Promise((resolve) => setImmediate(resolve));
        }
        if (batch.length < batchSize) break;
      }
      // The last read began after `head` was read, so every event up to `head` has been applied.
      position = Math.max(position, head);
      signal?.throwIfAborted();
      const swap = await backend.swap(rebuildId, shadow, position, c.version, c.checkpoints);
      if (swap !== 'behind') {
        position = swap.position;
        progress.done += swap.applied;
        break;
      }
      // The live view got further than the shadow in between: catch up with it, then try again.
    }
    swapped = true;
    progress.total = progress.done;
    c.report();
    return { position, events: progress.done, generation: shadow, resumedFrom: start.resumeFrom, durationMs: performance.now() - started };
  } finally {
    if (!swapped && generation !== undefined) {
      await backend.abandonRebuild(rebuildId, generation).catch((error: unknown) => {
        c.failures.logger.warn({ view: c.view, err: error }, `View "${c.view}": dropping the shadow tables of a failed rebuild failed`);
      });
    }
  }
}
