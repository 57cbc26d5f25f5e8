import { unlessAborted } from '../core/deadline.js';
import type { EventShape, Recorded } from '../core/event.js';
import type { Logger } from '../core/logger.js';
import { delay } from '../core/retry.js';
import type { EventStore } from '../core/store.js';
import { isTransient } from './checkpointing.js';

export interface LogReaderOptions<E extends EventShape> {
  name: string;
  store: EventStore<E>;
  batchSize: number;
  types: readonly E['type'][] | undefined;
  pollIntervalMs: number;
  logger: Logger;
}

/**
 * A subscription's reading of the log: a page at a time, waiting out transient failures, and idling
 * between pages until an append is signalled (a wake-up), the poll interval passes, or it must stop.
 */
export class LogReader<E extends EventShape> {
  #wake: (() => void) | undefined;
  #wakeRequested = false;

  constructor(private readonly o: LogReaderOptions<E>) {}

  /** A page is about to be read: wake-ups from now on are for what comes after it. */
  awake(): void {
    this.#wakeRequested = false;
  }

  /**
   * One page after `position`; undefined when a transient read error was waited out, or when the
   * signal fired first (a read has no effect to wait for, and a database that stopped answering must
   * not hold a stop()).
   */
  async readBatch(position: number, signal: AbortSignal): Promise<Recorded<E>[] | undefined> {
    try {
      return await unlessAborted(this.#read(position), signal, undefined);
    } catch (error) {
      // Events the store cannot decode, or a closed store, will not heal by waiting.
      if (!isTransient(error)) throw error;
      this.o.logger.warn({ subscription: this.o.name, err: error }, `Subscription "${this.o.name}": reading events failed; retrying`);
      await delay(this.o.pollIntervalMs, signal).catch(() => undefined);
      return undefined;
    }
  }

  async #read(position: number): Promise<Recorded<E>[]> {
    const batch: Recorded<E>[] = [];
    for await (const event of this.o.store.readAll({ after: position, limit: this.o.batchSize, types: this.o.types })) {
      batch.push(event);
    }
    return batch;
  }

  /** New events or finished work: run the loop again now (remembered if the loop is busy). */
  wake(): void {
    this.#wakeRequested = true;
    this.#wake?.();
  }

  /** Sleeps until an append is signalled, the poll interval passes, or the signal fires. */
  async idle(signal: AbortSignal): Promise<void> {
    if (this.#wakeRequested || signal.aborted) return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.#wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, this.o.pollIntervalMs);
      signal.addEventListener('abort', done, { once: true });
      this.#wake = done;
    });
  }
}
