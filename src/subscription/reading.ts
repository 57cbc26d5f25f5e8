import { unlessAborted } from '../core/deadline.js';
import type { EventShape, Recorded } from '../core/event.js';
import type { Logger } from '../core/logger.js';
import { delay } from '../core/retry.js';
import type { EventStore } from '../core/store.js';
import { isTransient } from './checkpointing.js';
import { LOOKED_THROUGH } from '../core/paged-read.js';

/** One page of a runner's events, and how far the log was looked at to find them. */
export interface Batch<E extends EventShape> {
  events: Recorded<E>[];
  /**
   * Every event up to here was looked at: a partition's page leaves out the other partitions' events,
   * and its checkpoint may still move past them. At least the last event's position.
   */
  through: number;
}

/**
 * Where a runner's events come from: its own reads of the log (`LogReader`), or its share of a node's
 * one reader (a partition of a partitioned runner, see SharedLog).
 */
export interface EventSource<E extends EventShape> {
  /** The run begins: appends wake it from now on. Returns what ends that. */
  open(): () => void;
  /** A page is about to be read: wake-ups from now on are for what comes after it. */
  awake(): void;
  /**
   * The next page after `position`; undefined when a transient read error was waited out, or when the
   * signal fired first (a read has no effect to wait for, and a database that stopped answering must
   * not hold a stop()). Throws what waiting will not heal (events it cannot decode, a closed store).
   */
  readBatch(position: number, signal: AbortSignal): Promise<Batch<E> | undefined>;
  /** New events or finished work: run the loop again now (remembered if the loop is busy). */
  wake(): void;
  /** Sleeps until woken, the poll interval passes, or the signal fires. */
  idle(signal: AbortSignal): Promise<void>;
}

/** Wake-ups of a runner's loop that may come while it is busy (then the next idle() returns at once). */
export class Waker {
  #wake: (() => void) | undefined;
  #wakeRequested = false;

  constructor(private readonly pollIntervalMs: number) {}

  awake(): void {
    this.#wakeRequested = false;
  }

  wake(): void {
    this.#wakeRequested = true;
    this.#wake?.();
  }

  /**
   * `tick`: a poll shared with other readers (a node's partitions), in place of this one's own timer,
   * so that their polls come at once and make one read.
   */
  async idle(signal: AbortSignal, tick?: Promise<void>): Promise<void> {
    if (this.#wakeRequested || signal.aborted) return;
    await new Promise<void>((resolve) => {
      let settled = false;
      const done = (): void => {
        // A shared tick may come after this wait ended another way: it must not end a later one.
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        if (this.#wake === done) this.#wake = undefined;
        resolve();
      };
      const timer = tick ? undefined : setTimeout(done, this.pollIntervalMs);
      void tick?.then(done);
      signal.addEventListener('abort', done, { once: true });
      this.#wake = done;
    });
  }
}

export interface LogReaderOptions<E extends EventShape> {
  name: string;
  store: EventStore<E>;
  batchSize: number;
  types: readonly E['type'][] | undefined;
  category: string | undefined;
  pollIntervalMs: number;
  logger: Logger;
}

/**
 * Reads a page (undefined when the signal fired first or a transient failure was waited out), so that
 * every reader treats a failing read alike: what waiting will not heal is thrown.
 */
export async function readOrWait<T>(
  read: () => Promise<T>,
  signal: AbortSignal,
  o: { name: string; pollIntervalMs: number; logger: Logger },
): Promise<T | undefined> {
  try {
    return await unlessAborted(read(), signal, undefined);
  } catch (error) {
    // Events the store cannot decode, or a closed store, will not heal by waiting.
    if (!isTransient(error)) throw error;
    o.logger.warn({ subscription: o.name, err: error }, `Subscription "${o.name}": reading events failed; retrying`);
    await delay(o.pollIntervalMs, signal).catch(() => undefined);
    return undefined;
  }
}

/**
 * Reads up to `limit` events after `position`. `through`: how far the read looked, past the last event
 * when the store says so (LOOKED_THROUGH): rows it skipped after that event (lifecycle events of a
 * read without types) are then not read again by the next page.
 */
export async function readPage<E extends EventShape>(
  store: EventStore<E>,
  position: number,
  limit: number,
  types: readonly E['type'][] | undefined,
  category: string | undefined,
): Promise<Batch<E>> {
  const events: Recorded<E>[] = [];
  const read = store.readAll({ after: position, limit, types, category });
  for await (const event of read) events.push(event);
  const last = events.length === 0 ? position : (events[events.length - 1] as Recorded<E>).position;
  const looked = (read as { [LOOKED_THROUGH]?: unknown })[LOOKED_THROUGH];
  return { events, through: typeof looked === 'number' && looked > last ? looked : last };
}

/**
 * A runner's own reading of the log: a page at a time, waiting out transient failures, and idling
 * between pages until an append is signalled (a wake-up), the poll interval passes, or it must stop.
 */
export class LogReader<E extends EventShape> implements EventSource<E> {
  readonly #waker: Waker;

  constructor(private readonly o: LogReaderOptions<E>) {
    this.#waker = new Waker(o.pollIntervalMs);
  }

  open(): () => void {
    return this.o.store.onAppend(() => this.wake());
  }

  awake(): void {
    this.#waker.awake();
  }

  async readBatch(position: number, signal: AbortSignal): Promise<Batch<E> | undefined> {
    const { store, batchSize, types, category } = this.o;
    return readOrWait(() => readPage(store, position, batchSize, types, category), signal, this.o);
  }

  wake(): void {
    this.#waker.wake();
  }

  idle(signal: AbortSignal): Promise<void> {
    return this.#waker.idle(signal);
  }
}
