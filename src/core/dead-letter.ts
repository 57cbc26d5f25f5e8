import type { FencedWriteOptions } from './checkpoint.js';

/** One failed attempt, as the dead-letter queue keeps it. */
export interface FailedAttempt {
  at: Date;
  /** A readable description of what was thrown (any value, not only an Error). */
  error: string;
}

/**
 * Where the failure happened:
 * - 'execute': an automation's side effect for one to-do item,
 * - 'trigger': an automation's trigger for an event (a poison event),
 * - 'handler': a subscription's handler for an event.
 */
export type DeadLetterStage = 'execute' | 'trigger' | 'handler';

/** 'dead' waits for an operator; 'redrive' is picked up by the leading node and run again. */
export type DeadLetterStatus = 'dead' | 'redrive';

export interface NewDeadLetter {
  /** The automation or subscription it belongs to. */
  source: string;
  stage: DeadLetterStage;
  /** The to-do item's key ('' for trigger and handler failures). */
  key: string;
  /** The to-do item's payload (null for trigger and handler failures). JSON. */
  payload: unknown;
  eventId: string;
  eventType: string;
  eventPosition: number;
  streamId: string;
  attempts: FailedAttempt[];
}

export interface DeadLetter extends NewDeadLetter {
  /** UUIDv7. */
  id: string;
  status: DeadLetterStatus;
  createdAt: Date;
  updatedAt: Date;
}

export interface DeadLetterQuery {
  source?: string;
  status?: DeadLetterStatus;
  /** Default 100. */
  limit?: number;
  /**
   * The page after this letter, in the listing's order: by id (ids are UUIDv7, so this is creation
   * order), newest first with `newestFirst`.
   */
  afterId?: string;
  /** Newest first (what an operator looks at first); default false: oldest first. */
  newestFirst?: boolean;
}

export type DeadLetterSelector = { id: string } | { source: string };

/**
 * The durable dead-letter queue: nothing a node gave up on is lost, and an operator can list, redrive
 * or discard it. Stored in the same database as the events.
 */
export interface DeadLetterStore {
  /** With `fence`, stored only while the fence holds (else `FencedError`, nothing stored). */
  add(letter: NewDeadLetter, options?: FencedWriteOptions): Promise<DeadLetter>;
  /** Oldest first. */
  list(query?: DeadLetterQuery): Promise<DeadLetter[]>;
  count(query?: Omit<DeadLetterQuery, 'limit' | 'afterId'>): Promise<number>;
  get(id: string): Promise<DeadLetter | undefined>;
  /** Marks letters for redrive; the leading node of their source runs them again. Returns how many. */
  redrive(selector: DeadLetterSelector): Promise<number>;
  /**
   * Ends a redrive: success removes the letter; failure puts it back to 'dead' with the new attempts
   * appended. Only a letter in 'redrive' status is changed (a concurrent discard wins). With `fence`,
   * nothing changes unless the fence holds (else `FencedError`).
   */
  settleRedrive(id: string, outcome: { ok: true } | { ok: false; attempts: FailedAttempt[] }, options?: FencedWriteOptions): Promise<void>;
  /** Removes letters for good. Returns how many. */
  discard(selector: DeadLetterSelector): Promise<number>;
}

/**
 * Remembers which to-do items have run, so a replay from the checkpoint after a crash runs only what
 * had not completed. An item is identified by the position of its event and an id unique within that
 * event.
 */
export interface CompletionStore {
  /**
   * Records completed items, all or none; recording one twice is harmless. With `fence`, nothing is
   * recorded unless the fence holds (else `FencedError`).
   */
  markCompleted(source: string, items: ReadonlyArray<{ position: number; itemId: string }>, options?: FencedWriteOptions): Promise<void>;
  /** Ids (`${position}/${itemId}`) of the items completed after `position`. */
  completedAfter(source: string, position: number): Promise<Set<string>>;
  /** Forgets completions at or below `position`: the checkpoint has passed them. */
  prune(source: string, position: number): Promise<void>;
}

/** A finished to-do item: the position of its event and its id within that event. */
export interface CompletedItem {
  position: number;
  itemId: string;
}

/**
 * A completion store that can record an item's completion in the same transaction as the item's side
 * effect, for effects written to the same database: both commit, or neither, so the effect happens
 * exactly once. `Tx` is what the side effect writes with (a pg client, a better-sqlite3 database).
 */
export interface TransactionalCompletionStore<Tx> extends CompletionStore {
  /**
   * Runs `work` in one transaction that also records `item` of `source` (none when undefined), fenced
   * by `options.fence` the way `markCompleted` is: a stale token throws FencedError and nothing
   * commits. If `work` throws, nothing commits either. Returns what `work` returned. Where the
   * database's transactions are synchronous (SQLite), `work` must be synchronous too.
   */
  completeWithin<T>(source: string, item: CompletedItem | undefined, work: (tx: Tx) => T, options?: FencedWriteOptions): Promise<Awaited<T>>;
}
