import type { FencedWriteOptions } from '../core/checkpoint.js';
import type { CompletionStore } from '../core/dead-letter.js';
import { unlessAborted } from '../core/deadline.js';
import type { Logger } from '../core/logger.js';
import { backoffDelay, delay } from '../core/retry.js';
import type { RetryPolicy } from '../core/retry.js';
import { isTransient } from '../subscription/checkpointing.js';
import { ErrorCode, isEskitError } from '../core/errors.js';
import type { FencedError } from '../core/errors.js';

export interface CompletedItem {
  position: number;
  itemId: string;
}

export interface CompletionRecorderOptions {
  source: string;
  /** Without a store, finished items are covered by the checkpoint alone. */
  store: CompletionStore | undefined;
  fence: FencedWriteOptions | undefined;
  /** The earliest position with an unfinished item: the checkpoint can cover only what is below it. */
  earliestPending(): number | undefined;
  /** The saved checkpoint. */
  saved(): number;
  /** Saves the checkpoint as far as the work lets it go (see OutstandingWork.begin). */
  saveCheckpoint(): Promise<void>;
  onFenced(error: FencedError): void;
  /** Items became durable: the window has room again. */
  onDurable(): void;
  warn(message: string, error: unknown): void;
}

/**
 * Makes finished items durable, continuously, so that a crash re-runs only the items in flight and the
 * few finished in the last round trip. One write at a time; what finishes meanwhile goes into the next
 * (group commit, no timer). An item below the earliest unfinished one is covered by saving the
 * checkpoint past it (one row for any number of items, which is what keeps catching up fast); an item
 * above it gets a completion record. The automation bounds what is finished but not yet durable (its
 * record window): when it is full, no new item starts until a write lands, so a crash never re-runs more
 * than the window.
 */
export class CompletionRecorder {
  #unrecorded: CompletedItem[] = [];
  /** Records in the write in flight: not durable yet either. */
  #inWrite = 0;
  /** Items the checkpoint has covered so far: a round that saved it made progress if this grew. */
  #covered = 0;
  #writing: Promise<void> | undefined;
  /** Records written since the last prune, and the checkpoint then. */
  #recordedSincePrune = 0;
  #prunedAt: number;
  #pruning: Promise<void> | undefined;

  constructor(private readonly options: CompletionRecorderOptions) {
    this.#prunedAt = options.saved();
  }

  /** Finished items not yet durable. */
  get size(): number {
    return this.#unrecorded.length + this.#inWrite;
  }

  finished(item: CompletedItem): void {
    this.#unrecorded.push(item);
    this.write();
  }

  /** The checkpoint was saved at `position`: what it passed is durable. */
  checkpointed(position: number): void {
    if (this.#unrecorded.length === 0) return;
    const before = this.#unrecorded.length;
    this.#unrecorded = this.#unrecorded.filter((item) => item.position > position);
    if (this.#unrecorded.length === before) return;
    this.#covered += before - this.#unrecorded.length;
    this.options.onDurable();
  }

  /** Resolves once no write is in flight (a stop waits for it before its last save). */
  async settled(): Promise<void> {
    while (this.#writing) await this.#writing;
  }

  /** After the stop's last checkpoint save: records whatever it did not cover. */
  async recordAll(): Promise<void> {
    await this.settled();
    const saved = this.options.saved();
    const left = this.#unrecorded.filter((item) => item.position > saved);
    this.#unrecorded = [];
    if (left.length > 0 && this.options.store) await this.options.store.markCompleted(this.options.source, left, this.options.fence);
  }

  /** Forgets records the checkpoint has passed (they would only pile up); at most one prune at a time. */
  prune(): void {
    const { store, source } = this.options;
    const saved = this.options.saved();
    if (!store || this.#pruning || this.#recordedSincePrune === 0 || saved <= this.#prunedAt) return;
    this.#recordedSincePrune = 0;
    this.#prunedAt = saved;
    this.#pruning = store
      .prune(source, saved)
      .catch((error: unknown) => this.options.warn('pruning completion records failed', error))
      .finally(() => (this.#pruning = undefined));
  }

  /**
   * Starts a write of what is not yet durable, unless one is in flight (it takes the rest after it).
   * The first round starts after the current turn of the event loop, not at once: items that finish
   * in the same turn (a batch of synchronous side effects) then share it, rather than each starting
   * a round of its own. No timer: it waits for no time, only for the turn to end.
   */
  write(): void {
    if (this.#writing || this.#unrecorded.length === 0) return;
    this.#writing = new Promise<void>((resolve) => setImmediate(resolve))
      .then(() => this.#drain())
      .finally(() => {
        this.#writing = undefined;
      });
  }

  /** Rounds until nothing is left, or a round made no progress (the next finished item starts another). */
  async #drain(): Promise<void> {
    for (;;) {
      if (this.#unrecorded.length === 0) return;
      const progressed = await this.#round();
      if (!progressed || this.#unrecorded.length === 0) return;
    }
  }

  async #round(): Promise<boolean> {
    const { store, source, fence } = this.options;
    const saved = this.options.saved();
    const earliest = this.options.earliestPending() ?? Number.POSITIVE_INFINITY;
    const records: CompletedItem[] = [];
    let coverable = false;
    const kept: CompletedItem[] = [];
    for (const item of this.#unrecorded) {
      if (item.position <= saved) continue;
      if (item.position < earliest || !store) {
        coverable = true;
        kept.push(item);
      } else records.push(item);
    }
    // Records leave the list while their write is in flight; a failed write puts them back.
    this.#unrecorded = kept;
    this.#inWrite = records.length;
    const covered = this.#covered;
    try {
      await Promise.all([
        records.length > 0 ? (store as CompletionStore).markCompleted(source, records, fence) : undefined,
        coverable ? this.options.saveCheckpoint() : undefined,
      ]);
      this.#recordedSincePrune += records.length;
    } catch (error) {
      this.#unrecorded.push(...records);
      this.#inWrite = 0;
      if (isEskitError(error, ErrorCode.Fenced)) {
        this.options.onFenced(error as FencedError);
        return false;
      }
      // Not fatal: without the record an item may run again after a crash (at least once).
      this.options.warn('recording completed items failed; will retry', error);
      return false;
    }
    this.#inWrite = 0;
    if (records.length > 0) this.options.onDurable();
    return records.length > 0 || this.#covered > covered;
  }
}

/**
 * The completion records after the checkpoint `position`, at a takeover (older ones are pruned then).
 * Retried with backoff while they cannot be read: a connection reset at takeover must not fail a new
 * leader for good. Undefined when `signal` fired first (stopped, or leadership lost).
 */
export async function loadCompleted(
  o: { source: string; store: CompletionStore | undefined; retry: RetryPolicy; pollIntervalMs: number; logger: Logger },
  position: number,
  signal: AbortSignal,
): Promise<Set<string> | undefined> {
  const { store, source, logger } = o;
  if (!store) return new Set();
  for (let attempt = 1; ; attempt++) {
    try {
      const completed = await unlessAborted(store.completedAfter(source, position), signal, undefined);
      if (completed === undefined) return undefined;
      store.prune(source, position).catch((error: unknown) => {
        logger.warn({ automation: source, err: error }, `Automation "${source}": pruning completion records failed`);
      });
      return completed;
    } catch (error) {
      if (!isTransient(error)) throw error;
      logger.warn({ automation: source, attempt, err: error }, `Automation "${source}": reading completion records failed; retrying`);
    }
    try {
      await delay(Math.min(o.pollIntervalMs, backoffDelay(o.retry, attempt)), signal);
    } catch {
      return undefined;
    }
  }
}
