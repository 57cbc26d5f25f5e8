/**
 * One writer per stream within a process: commands to a stream run one after another, in the order
 * they arrived, so that they never conflict with each other (only with other processes).
 *
 * A stream is named by its store object and its id, so every CommandHandler on one store shares the
 * queues, whatever its decider. Two store objects on one database are two writers, as two processes
 * are: their commands to a stream conflict and retry. A stream's queue exists only while a command
 * runs or waits on it, and a store's map goes with the store.
 */

interface Waiter {
  grant: () => void;
  /** Set when the waiter's signal aborted: it is skipped, not granted. */
  cancelled: boolean;
}

/** Commands waiting for a stream, first in first out; `head` avoids shifting the array on each grant. */
interface StreamQueue {
  waiters: (Waiter | undefined)[];
  head: number;
}

const queues = new WeakMap<object, Map<string, StreamQueue>>();

/**
 * Waits until the stream is free (at once when it is), and returns the function that frees it. The
 * caller must call it exactly once, whatever happens. An abort while waiting rejects with the
 * signal's reason and gives up the place in the queue.
 */
export function acquireStream(store: object, streamId: string, signal: AbortSignal | undefined): Promise<() => void> | (() => void) {
  let streams = queues.get(store);
  if (streams === undefined) {
    streams = new Map();
    queues.set(store, streams);
  }
  const map = streams;
  const release = (): void => releaseStream(map, streamId);
  const queue = map.get(streamId);
  if (queue === undefined) {
    map.set(streamId, { waiters: [], head: 0 });
    return release;
  }
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      waiter.cancelled = true;
      reject(signal?.reason);
    };
    const waiter: Waiter = {
      cancelled: false,
      grant: () => {
        signal?.removeEventListener('abort', onAbort);
        resolve(release);
      },
    };
    queue.waiters.push(waiter);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function releaseStream(streams: Map<string, StreamQueue>, streamId: string): void {
  const queue = streams.get(streamId);
  if (queue === undefined) return;
  while (queue.head < queue.waiters.length) {
    const next = queue.waiters[queue.head];
    queue.waiters[queue.head++] = undefined;
    if (next === undefined || next.cancelled) continue;
    // Compact now and then, so that a long-busy stream does not keep every waiter it ever had.
    if (queue.head > 64 && queue.head * 2 > queue.waiters.length) {
      queue.waiters = queue.waiters.slice(queue.head);
      queue.head = 0;
    }
    next.grant();
    return;
  }
  streams.delete(streamId);
}

/** How many streams of `store` have a command running or waiting (for tests: idle streams leave nothing). */
export function busyStreams(store: object): number {
  return queues.get(store)?.size ?? 0;
}
