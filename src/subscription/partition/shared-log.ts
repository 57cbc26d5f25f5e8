import { withheldIfPersonal } from '../../core/personal/withheld.js';
import { describeError, ErrorCode, EskitError } from '../../core/errors.js';
import type { EventShape, Recorded } from '../../core/event.js';
import type { Logger } from '../../core/logger.js';
import type { EventStore } from '../../core/store.js';
import { unlessAborted } from '../../core/deadline.js';
import { isTransient } from '../checkpointing.js';
import { readOrWait, readPage, Waker } from '../reading.js';
import type { Batch, EventSource } from '../reading.js';
import { partitionOf } from './naming.js';

export interface SharedLogOptions<E extends EventShape> {
  /** The partitioned runner's name, for logs. */
  name: string;
  store: EventStore<E>;
  partitions: number;
  partitionKey: (event: Recorded<E>) => string;
  /** Events a partition gets per page, and a private read's page. */
  batchSize: number;
  types: readonly E['type'][] | undefined;
  category: string | undefined;
  pollIntervalMs: number;
  logger: Logger;
}

interface Entry<E extends EventShape> {
  event: Recorded<E>;
  partition: number;
}

/** How many pages of the log the node keeps for partitions that are a little behind the others. */
const WINDOW_PAGES = 4;

/**
 * A node's one reader of the log for all the partitions it leads. It keeps a window of the log, every
 * event from `#start` (exclusive) to `#end`, each tagged with its partition once, and hands each
 * partition the events of its own that come after the partition's checkpoint. Reading more is shared:
 * the partitions that reach the window's end wait for one read, whoever asked first.
 *
 * A partition behind the window (newly taken over with an old checkpoint, or slow) reads the log on
 * its own until it reaches the window, so it never holds the others up; a partition ahead of it
 * (a checkpoint another node moved on) does the same until the window catches up with it.
 */
export class SharedLog<E extends EventShape> {
  readonly #entries: Entry<E>[] = [];
  /** The window holds every event after `#start` up to `#end`; undefined until the first read. */
  #start: number | undefined;
  #end = 0;
  #fetching: Promise<true | undefined> | undefined;
  readonly #views = new Set<PartitionView<E>>();
  #unsubscribe: (() => void) | undefined;
  readonly #pageSize: number;
  /** The partitions' poll, shared: see tick(). */
  #tick: { promise: Promise<void>; end: () => void } | undefined;

  constructor(private readonly o: SharedLogOptions<E>) {
    // One read serves every partition: take a few partitions' pages at once.
    this.#pageSize = Math.min(5_000, o.batchSize * Math.min(o.partitions, WINDOW_PAGES));
  }

  /** The events of `partition`, for its runner. */
  source(partition: number): EventSource<E> {
    return new PartitionView(this, partition, this.o.pollIntervalMs);
  }

  /** A partition's run began: appends wake it. */
  opened(view: PartitionView<E>): () => void {
    this.#views.add(view);
    this.#unsubscribe ??= this.o.store.onAppend(() => {
      for (const open of this.#views) open.wake();
    });
    return () => {
      this.#views.delete(view);
      if (this.#views.size > 0) return;
      this.#unsubscribe?.();
      this.#unsubscribe = undefined;
      this.#tick?.end();
    };
  }

  /**
   * The next poll, one for all the partitions: each idling on a timer of its own polled the log on its
   * own (N reads per poll interval on an idle node, and as many warnings per interval while reads
   * failed); idling on one tick, they wake at once and share one read.
   */
  tick(): Promise<void> {
    if (this.#tick) return this.#tick.promise;
    let end: () => void = () => undefined;
    const promise = new Promise<void>((resolve) => {
      const timer = setTimeout(() => end(), this.o.pollIntervalMs);
      end = () => {
        clearTimeout(timer);
        if (this.#tick?.promise === promise) this.#tick = undefined;
        resolve();
      };
    });
    this.#tick = { promise, end };
    return promise;
  }

  /** The next page of `partition` after `position` (see EventSource.readBatch). */
  async read(partition: number, position: number, signal: AbortSignal): Promise<Batch<E> | undefined> {
    if (this.#start === undefined || ((position < this.#start || position > this.#end) && !this.#fetching && !this.#windowInUse())) {
      // Nobody reads from the window (and no read fills it): start it where this partition is.
      this.#entries.length = 0;
      this.#start = this.#end = position;
    }
    if (position < this.#start || position > this.#end) return this.#readAlone(partition, position, signal);
    if (position === this.#end) {
      const fetched = await unlessAborted(this.#fetch(), signal, undefined);
      if (fetched === undefined) return undefined;
      // The window moved on while this partition waited for the read (trimmed behind the others).
      if (position < (this.#start as number)) return this.#readAlone(partition, position, signal);
    }
    return this.#fromWindow(partition, position);
  }

  /**
   * Reads past the window's end, once for everyone waiting there. A transient failure is warned about
   * once, and waited out until the next tick for all of them alike (undefined: read again).
   */
  #fetch(): Promise<true | undefined> {
    this.#fetching ??= (async (): Promise<true | undefined> => {
      try {
        let page: Recorded<E>[];
        let through: number;
        try {
          ({ events: page, through } = await readPage(this.o.store, this.#end, this.#pageSize, this.o.types, this.o.category));
        } catch (error) {
          if (!isTransient(error)) throw error;
          this.o.logger.warn({ subscription: this.o.name, err: error }, `Subscription "${this.o.name}": reading events failed; retrying`);
          await this.tick();
          return undefined;
        }
        // Tagged before any is kept: a partitionKey that throws leaves the window as it was.
        const tagged = page.map((event) => ({ event, partition: this.#partitionOf(event) }));
        for (const entry of tagged) this.#entries.push(entry);
        // Past the last event when the read skipped rows after it (lifecycle events): not read again.
        this.#end = Math.max(this.#end, through);
        this.#trim();
        return true;
      } finally {
        this.#fetching = undefined;
      }
    })();
    return this.#fetching;
  }

  #fromWindow(partition: number, position: number): Batch<E> {
    const entries = this.#entries;
    let index = firstAfter(entries, position);
    const events: Recorded<E>[] = [];
    let through = position;
    for (; index < entries.length; index++) {
      const entry = entries[index] as Entry<E>;
      // The parts of a split stored event share its position, and a checkpoint is a position: a batch
      // never ends between them (the next would start after that position and miss the rest).
      if (events.length >= this.o.batchSize && entry.event.position !== through) break;
      through = entry.event.position;
      if (entry.partition === partition) events.push(entry.event);
    }
    if (index === entries.length) through = Math.max(through, this.#end);
    return { events, through };
  }

  /** A partition outside the window reads the log itself, keeping its own events of the page. */
  async #readAlone(partition: number, position: number, signal: AbortSignal): Promise<Batch<E> | undefined> {
    const page = await readOrWait(() => readPage(this.o.store, position, this.o.batchSize, this.o.types, this.o.category), signal, this.o);
    if (page === undefined) return undefined;
    return { events: page.events.filter((event) => this.#partitionOf(event) === partition), through: page.through };
  }

  /**
   * Drops what no partition reading from the window needs any more, and, past the window's size, what
   * the slowest still need: they read alone until they catch up.
   */
  #trim(): void {
    let keepAfter = this.#end;
    for (const view of this.#views) {
      const at = view.position;
      if (at !== undefined && at >= (this.#start as number) && at < keepAfter) keepAfter = at;
    }
    let drop = firstAfter(this.#entries, keepAfter);
    drop = Math.max(drop, this.#entries.length - this.#pageSize * WINDOW_PAGES);
    if (drop <= 0) return;
    this.#start = (this.#entries[drop - 1] as Entry<E>).event.position;
    this.#entries.splice(0, drop);
  }

  #windowInUse(): boolean {
    for (const view of this.#views) {
      const at = view.position;
      if (at !== undefined && at >= (this.#start as number) && at <= this.#end) return true;
    }
    return false;
  }

  #partitionOf(event: Recorded<E>): number {
    let key: unknown;
    try {
      key = this.o.partitionKey(event);
      // An undefined key (a field missing on some events) would put all of them in one partition, quietly.
      if (typeof key !== 'string') throw new TypeError(`it returned ${key === null ? 'null' : typeof key}, not a string`);
    } catch (thrown) {
      // Not transient: the same event gets the same answer on every read. Thrown as it was, it counted
      // as a read failure to wait out, and every partition retried (and warned) each poll, for good.
      const error = withheldIfPersonal(thrown, [event], event.position);
      throw new EskitError(
        ErrorCode.InvalidArgument,
        `Partitioned runner "${this.o.name}": partitionKey threw for the event at position ${event.position} (stream "${event.streamId}", type ${event.type}): ${describeError(error)}. ` +
          'It must return a key for every event the runner reads.',
        { cause: error },
      );
    }
    return partitionOf(key as string, this.o.partitions);
  }
}

/** The index of the first entry after `position` (entries are in position order). */
function firstAfter<E extends EventShape>(entries: readonly Entry<E>[], position: number): number {
  let low = 0;
  let high = entries.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if ((entries[middle] as Entry<E>).event.position <= position) low = middle + 1;
    else high = middle;
  }
  return low;
}

/** One partition's side of the shared reader. */
class PartitionView<E extends EventShape> implements EventSource<E> {
  /** Where this partition last asked to read from; the window keeps what it still needs. */
  position: number | undefined;
  readonly #waker: Waker;

  constructor(
    private readonly log: SharedLog<E>,
    private readonly partition: number,
    pollIntervalMs: number,
  ) {
    this.#waker = new Waker(pollIntervalMs);
  }

  open(): () => void {
    const close = this.log.opened(this);
    return () => {
      this.position = undefined;
      close();
    };
  }

  awake(): void {
    this.#waker.awake();
  }

  readBatch(position: number, signal: AbortSignal): Promise<Batch<E> | undefined> {
    this.position = position;
    return this.log.read(this.partition, position, signal);
  }

  wake(): void {
    this.#waker.wake();
  }

  idle(signal: AbortSignal): Promise<void> {
    return this.#waker.idle(signal, this.log.tick());
  }
}
