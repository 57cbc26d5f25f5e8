import type { FencedWriteOptions } from '../core/checkpoint.js';
import type { FailedAttempt, DeadLetter } from '../core/dead-letter.js';
import type { FencedError } from '../core/errors.js';
import type { Recorded } from '../core/event.js';
import type { CompletionRecorder } from './completions.js';

export interface Item<P> {
  key: string;
  payload: P;
  /** Unique within its event: the key plus its occurrence among the event's items. */
  itemId: string;
  event: Recorded;
  /** The position the item holds the checkpoint at; undefined for redrives (already behind it). */
  position: number | undefined;
  redriveOf: DeadLetter | undefined;
  /** For items of a redriven trigger letter: the letter is settled once all of them finished. */
  group?: { letter: DeadLetter; remaining: number };
  /** NO_FAILURES until the first failure (most items never fail: no array each). */
  failures: readonly FailedAttempt[];
}

export const NO_FAILURES: readonly FailedAttempt[] = Object.freeze([]);

/** An attempt of `execute` that has not settled, for the timeout sweep. */
export interface RunningAttempt {
  readonly item: Item<unknown>;
  /** performance.now() past which it has timed out. */
  deadline: number;
  /** It passed its deadline (its signal fired) and has not settled: it is `hung`. */
  expired: boolean;
  expire(): void;
}

/** A concurrency slot held by a key's run; given back early when its attempt times out. */
export interface Slot {
  held: boolean;
  release(): void;
}

/**
 * Positions with unfinished items and how many each has: the checkpoint may not pass the earliest.
 * Events arrive in order, so positions are appended ascending and read from a head index (`shift()`
 * was the automation's hottest line). Finished positions are dropped lazily: at the head as it moves,
 * and by a compaction when they pile up behind an item that stays pending (one stuck item while
 * thousands after it finish must not grow the list without bound).
 */
export class PendingPositions {
  #positions: number[] = [];
  #head = 0;
  readonly #counts = new Map<number, number>();
  /** performance.now() when a position became pending: the age of the oldest one, for the status row. */
  readonly #since = new Map<number, number>();

  add(position: number): void {
    const count = this.#counts.get(position);
    if (count === undefined) {
      this.#since.set(position, performance.now());
      this.#positions.push(position);
      // Amortised O(1): runs after at least `size + 1024` pushes since the last compaction.
      if (this.#positions.length - this.#head > 2 * this.#counts.size + 1024) this.#compact();
    }
    this.#counts.set(position, (count ?? 0) + 1);
  }

  remove(position: number): void {
    const count = (this.#counts.get(position) ?? 1) - 1;
    if (count === 0) {
      this.#counts.delete(position);
      this.#since.delete(position);
    } else this.#counts.set(position, count);
  }

  /** How long the earliest pending position has waited, in ms; undefined when none is pending. */
  oldestAgeMs(): number | undefined {
    const earliest = this.earliest();
    const since = earliest === undefined ? undefined : this.#since.get(earliest);
    return since === undefined ? undefined : performance.now() - since;
  }

  earliest(): number | undefined {
    const positions = this.#positions;
    let head = this.#head;
    while (head < positions.length && !this.#counts.has(positions[head] as number)) head++;
    this.#head = head;
    if (head > 1024 && head * 2 > positions.length) this.#compact();
    return this.#positions[this.#head];
  }

  /** Entries kept (pending or not yet dropped), for tests of the bound. */
  get length(): number {
    return this.#positions.length;
  }

  #compact(): void {
    this.#positions = this.#positions.slice(this.#head).filter((position) => this.#counts.has(position));
    this.#head = 0;
  }
}

/** One leadership period's to-do list. A new period starts from scratch at the checkpoint. */
export class Period<P> {
  readonly queues = new Map<string, Item<P>[]>();
  /** Keys whose next item may start, in the order they became ready. */
  readonly readyKeys: string[] = [];
  /** Slots taken: attempts running, not counting those past their timeout (`hung`). */
  running = 0;
  /** Attempts past their timeout that have not settled: each holds its key, not a slot. */
  hung = 0;
  pending = 0;
  readonly positions = new PendingPositions();
  /** Keys running (the promise of their run) and ticks: a stop waits for all of them. */
  readonly inFlight = new Set<Promise<void>>();
  readonly redriving = new Set<string>();
  /** Keys waiting out a retry's backoff: they hold no slot, only their key. */
  readonly backoffs = new Set<NodeJS.Timeout>();
  savedPosition: number;
  /** Aborts backoff waits and capacity waits (stop or loss). */
  readonly halt = new AbortController();
  /** Aborts the side effects themselves (loss only: a stop lets them finish). */
  readonly lose = new AbortController();
  timer: NodeJS.Timeout | undefined;
  readonly attempts = new Set<RunningAttempt>();
  sweeper: NodeJS.Timeout | undefined;
  /** `halt` aborted / `lose` aborted, as fields: read for every item, where a signal's getter shows in profiles. */
  ended = false;
  lost = false;
  /** Makes finished items durable (with a completion store only). */
  recorder: CompletionRecorder | undefined;
  /** Dead letters, completion records and settlements of this leadership are fenced by its token. */
  readonly fence: FencedWriteOptions | undefined;

  constructor(
    readonly name: string,
    readonly fencingToken: number | undefined,
    readonly completed: Set<string>,
    position: number,
    /** Ends the leadership: a write or a side effect met a newer fencing token. */
    readonly fenced: (error: FencedError) => void,
  ) {
    this.savedPosition = position;
    this.fence = fencingToken === undefined ? undefined : { fence: { checkpoint: name, fencingToken } };
  }

  end(reason: 'stopped' | 'lost'): void {
    if (reason === 'lost' && !this.lost) {
      this.lost = true;
      this.lose.abort(new Error(`Automation "${this.name}" lost leadership, or gave up its work at stop()`));
    }
    this.ended = true;
    this.halt.abort(new Error(`Automation "${this.name}" is stopping`));
    clearTimeout(this.timer);
    for (const timer of this.backoffs) clearTimeout(timer);
    this.backoffs.clear();
  }
}
