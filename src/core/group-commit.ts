import type { PreparedEvent, WrittenEvents } from './store-base.js';
import type { ExpectedVersion } from './store.js';

/** One append waiting for its group: what `writeEvents` was given. */
export interface GroupedAppend {
  streamId: string;
  events: PreparedEvent[];
  expected: ExpectedVersion;
}

/**
 * What became of each append of a group, in the group's order: what it wrote, or the error that
 * refused it alone (a version conflict, a duplicate id). Throwing instead fails every append of the
 * group with that error: the adapter must only do so when none of them was written.
 */
export type GroupOutcome = WrittenEvents | Error;

/**
 * Writes one group in one transaction. Appends are judged in the order given: an append sees the
 * versions the earlier ones in its group wrote, so two exact-version appends to one stream cannot
 * both win. A group of one is worth a path of its own (no arrays to build).
 */
export type GroupWriter = (group: readonly GroupedAppend[]) => Promise<GroupOutcome[]> | GroupOutcome[];

export interface GroupCommitLimits {
  /** Appends per group. Default 256. */
  maxAppends?: number;
  /** Events per group. Default 10,000. */
  maxEvents?: number;
  /** JSON text (data and metadata) per group, in UTF-16 code units. Default 4 Mi. */
  maxChars?: number;
}

interface Entry {
  append: GroupedAppend;
  resolve(written: WrittenEvents): void;
  reject(error: unknown): void;
}

/**
 * Group commit without a timer: appends that arrive while a group is being written queue up and go
 * together as the next group, the moment the current one is done. An append that finds nothing in
 * flight is written at once: it waits only for the promise jobs already queued in this turn of the
 * event loop (DataLoader's trick), so that a burst started together (`Promise.all`, or many writers
 * woken by one commit) forms one group instead of one plus the rest.
 *
 * Why it pays: the cost of an append is mostly per transaction (the schema's append lock, one commit
 * flush, one notification), so N appends in one transaction cost little more than one. At most one
 * group is in flight per store: groups of one store take the same lock one after another anyway.
 *
 * Order: groups are formed in arrival order and written one after another, so positions follow the
 * order in which appends were called within this process.
 */
export class GroupCommit {
  readonly #write: GroupWriter;
  readonly #maxAppends: number;
  readonly #maxEvents: number;
  readonly #maxChars: number;
  #queue: Entry[] = [];
  #scheduled = false;
  #inFlight: Promise<void> | undefined;

  constructor(write: GroupWriter, limits: GroupCommitLimits = {}) {
    this.#write = write;
    // At least 1 each: a group always takes the oldest append, however big.
    this.#maxAppends = Math.max(1, limits.maxAppends ?? 256);
    this.#maxEvents = Math.max(1, limits.maxEvents ?? 10_000);
    this.#maxChars = Math.max(1, limits.maxChars ?? 4 * 1024 * 1024);
  }

  append(append: GroupedAppend): Promise<WrittenEvents> {
    return new Promise<WrittenEvents>((resolve, reject) => {
      this.#queue.push({ append, resolve, reject });
      if (this.#inFlight === undefined && !this.#scheduled) this.#schedule();
    });
  }

  /** Resolves once every append queued so far has been written or refused (close() waits for it). */
  async drain(): Promise<void> {
    while (this.#inFlight !== undefined || this.#queue.length > 0) {
      if (this.#inFlight === undefined) this.#flush();
      await this.#inFlight;
    }
  }

  #schedule(): void {
    this.#scheduled = true;
    // After the promise jobs queued so far (and those they queue), before any I/O: no timer, no delay
    // an append alone would notice.
    void Promise.resolve().then(() => process.nextTick(() => this.#flush()));
  }

  #flush(): void {
    this.#scheduled = false;
    if (this.#inFlight !== undefined || this.#queue.length === 0) return;
    const group = this.#take();
    this.#inFlight = this.#run(group).finally(() => {
      this.#inFlight = undefined;
      // Whatever queued meanwhile is the next group, written now, with the appends its writers make
      // on being answered in this same turn (a writer answered by this group often appends again).
      if (this.#queue.length > 0 && !this.#scheduled) this.#schedule();
    });
  }

  /** The next group: the oldest appends, up to the limits. An append too big for any limit goes alone. */
  #take(): Entry[] {
    const queue = this.#queue;
    let count = 0;
    let events = 0;
    let chars = 0;
    // Two appends of one event id never share a group: PostgreSQL's group statement checks ids against
    // the log, not within the group. The second goes in the next group, and meets the first there.
    const ids = new Set<string>();
    while (count < queue.length && count < this.#maxAppends) {
      const append = (queue[count] as Entry).append;
      const size = weight(append.events);
      // An append that repeats an id of its own goes alone, and fails alone (the database says which id).
      const repeats = repeatsId(append.events);
      if (count > 0 && (repeats || events + append.events.length > this.#maxEvents || chars + size > this.#maxChars || sharesId(append.events, ids))) break;
      count++;
      if (repeats) break;
      events += append.events.length;
      chars += size;
      for (const event of append.events) ids.add(event.id);
    }
    const group = queue.slice(0, count);
    this.#queue = queue.slice(count);
    return group;
  }

  async #run(group: Entry[]): Promise<void> {
    let outcomes: GroupOutcome[];
    try {
      outcomes = await this.#write(group.map((entry) => entry.append));
    } catch (error) {
      for (const entry of group) entry.reject(error);
      return;
    }
    group.forEach((entry, index) => {
      const outcome = outcomes[index];
      if (outcome === undefined) entry.reject(new Error(`eskit: the group writer returned no outcome for append ${index} of ${group.length}`));
      else if (outcome instanceof Error) entry.reject(outcome);
      else entry.resolve(outcome);
    });
  }
}

function weight(events: readonly PreparedEvent[]): number {
  let chars = 0;
  for (const event of events) chars += event.data.length + event.metadata.length;
  return chars;
}

function repeatsId(events: readonly PreparedEvent[]): boolean {
  if (events.length < 2) return false;
  return new Set(events.map((event) => event.id)).size !== events.length;
}

function sharesId(events: readonly PreparedEvent[], ids: ReadonlySet<string>): boolean {
  if (ids.size === 0) return false;
  for (const event of events) if (ids.has(event.id)) return true;
  return false;
}
