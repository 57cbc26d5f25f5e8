import type { DeadLetterStore } from '../core/dead-letter.js';
import type { EventShape } from '../core/event.js';
import type { Logger } from '../core/logger.js';
import type { RetryPolicy } from '../core/retry.js';
import type { FailureAction, SubscriptionOptions, SubscriptionStatus } from '../subscription/subscription.js';
import type { WaitForOptions } from './progress.js';
import type { KeysOf } from './signals.js';
import type { ChangeFeed } from './change-feed.js';

/** What every view takes, whatever keeps its state (each kind adds where it runs: a backend or a store). */
export interface ViewOptions<E extends EventShape> {
  /** Unique per view: names its checkpoint, its leader lock and its dead letters. */
  name: string;
  /** Only events of these types reach `evolve`. */
  types?: readonly E['type'][];
  /** Only events of streams in this category (the stream id up to its first `-`); with `types`, both must match. */
  category?: string;
  /** Events applied per transaction (at most: a batch is what the log has, up to this). Default 500. */
  batchSize?: number;
  /**
   * Retries of a failing `evolve` (each attempt in a new transaction). Default 5 attempts, 100 ms
   * doubling up to 10 s. A batch that keeps failing is replayed one event at a time, so the failure is
   * pinned on one event.
   */
  retry?: Partial<RetryPolicy>;
  /**
   * After the last attempt, store the event here and go on without it. Without it (and without
   * `onHandlerFailure`) the view stops with `ESKIT_HANDLER_FAILED` (state 'failed').
   */
  deadLetters?: DeadLetterStore;
  /** Decides after the last attempt: 'skip' (you stored it somewhere) or 'stop'. Wins over `deadLetters`. */
  onHandlerFailure?: FailureAction<E>;
  /** The safety net behind append notifications. Default 500 ms. */
  pollIntervalMs?: number;
  /** The keys an event changes, for the change feed. Without it every change is "everything changed". */
  keysOf?: KeysOf<E>;
  /** Change feed: a change is pushed at once, then changes within this many ms of a push go out as one. Default 10. */
  debounceMs?: number;
  /** Keys a change (and a listener's pending change) carries before it becomes "everything". Default 1000. */
  maxKeys?: number;
  /**
   * How often the checkpoint is read while `waitFor` waits or change listeners follow a view that this
   * process does not run (another process leads it). Default 50 ms.
   */
  checkpointPollMs?: number;
  /** How long stop() lets a batch in flight finish before abandoning it (see SubscriptionOptions). Default 10 000. */
  drainTimeoutMs?: number;
  /** The bound on each database call made while stopping (see SubscriptionOptions). Default 2 000. */
  stopCallTimeoutMs?: number;
  logger?: Logger;
}

export interface ViewStatus extends SubscriptionStatus {
  /** The setup version this code declares (SQL views; 0 for in-memory views). */
  setupVersion: number;
  /** Progress of a rebuild running in this process. */
  rebuilding: RebuildProgress | undefined;
}

export interface RebuildProgress {
  /** Events applied to the shadow tables so far. */
  done: number;
  /** Events of the view's types up to the head, as last counted (grows while appends go on). */
  total: number;
}

/** Anything `waitFor` can wait on. */
export interface Waitable {
  readonly name: string;
  waitFor(position: number, options?: WaitForOptions): Promise<void>;
}

/** Anything with a change feed. */
export interface Observable {
  readonly name: string;
  readonly changes: ChangeFeed;
}

/** The options a view hands its subscription unchanged, the same for every kind of view. */
export function subscriptionOptionsOf<E extends EventShape>(
  options: ViewOptions<E>,
): Pick<
  SubscriptionOptions<E>,
  'name' | 'types' | 'category' | 'batchSize' | 'retry' | 'deadLetters' | 'onHandlerFailure' | 'pollIntervalMs' | 'drainTimeoutMs' | 'stopCallTimeoutMs'
> {
  const { name, types, category, batchSize, retry, deadLetters, onHandlerFailure, pollIntervalMs, drainTimeoutMs, stopCallTimeoutMs } = options;
  return { name, types, category, batchSize, retry, deadLetters, onHandlerFailure, pollIntervalMs, drainTimeoutMs, stopCallTimeoutMs };
}
