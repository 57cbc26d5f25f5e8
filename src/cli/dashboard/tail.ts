// The log tail: the events appended since the last sample, read raw (personal fields as
// "[personal]"), and the last ones kept for a page that connects later.
import type { Recorded } from '../../core/event.js';
import type { EventStore } from '../../core/store.js';
import { printable } from '../personal-fields.js';
import type { EventView } from './types.js';

/** How many events a page gets on connect. */
export const TAIL_BUFFER = 100;
/** Further behind than this, the tail skips ahead to the last TAIL_BUFFER events (the page shows 200 rows). */
const MAX_BEHIND = 1000;

/** An event as the API gives it: its data and metadata through printable(), its time as an ISO string. */
export function eventView(event: Recorded): EventView {
  return {
    position: event.position,
    id: event.id,
    type: event.type,
    streamId: event.streamId,
    streamVersion: event.streamVersion,
    recordedAt: event.timestamp.toISOString(),
    data: printable(event.data),
    metadata: printable(event.metadata) as Record<string, unknown>,
  };
}

export class LogTail {
  readonly #store: EventStore;
  #after: number | undefined;
  #recent: EventView[] = [];

  constructor(store: EventStore) {
    this.#store = store;
  }

  /** The last events read (at most TAIL_BUFFER), oldest first. */
  recent(): EventView[] {
    return this.#recent;
  }

  /** Reads what was appended since the last poll (the first: the last TAIL_BUFFER events); returns it. */
  async poll(): Promise<EventView[]> {
    const head = await this.#store.headPosition();
    let after = this.#after === undefined || head - this.#after > MAX_BEHIND ? Math.max(0, head - TAIL_BUFFER) : this.#after;
    const fresh: EventView[] = [];
    while (after < head) {
      let read = 0;
      for await (const event of this.#store.readAll({ after, limit: 500, raw: true })) {
        if (event.position > head) break;
        fresh.push(eventView(event));
        after = event.position;
        read += 1;
      }
      if (read === 0) break;
    }
    // Where the reads got to, not the head: the log never lets a reader past an event that is still
    // being committed, so an event below the head that was not readable yet comes with the next poll.
    this.#after = after;
    if (fresh.length > 0) this.#recent = [...this.#recent, ...fresh].slice(-TAIL_BUFFER);
    return fresh.slice(-MAX_BEHIND);
  }
}
