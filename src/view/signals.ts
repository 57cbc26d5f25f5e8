import { withheldIfPersonal } from '../core/personal/withheld.js';
import { ErrorCode, InvalidArgumentError, isEskitError } from '../core/errors.js';
import type { EventShape, Recorded } from '../core/event.js';
import type { Logger } from '../core/logger.js';
import type { EventStore } from '../core/store.js';
import { readsLifecycleRow, storedTypesOf } from '../core/store-base.js';
import type { ViewCommitHint, ViewCommitListener, ViewWatch } from '../core/view-backend.js';
import { milliseconds } from '../core/validate.js';
import { ChangeFeed } from './change-feed.js';
import { ProgressTracker } from './progress.js';
import type { WaitForOptions } from './progress.js';

/** The keys of a view's state an event changed (for the change feed); `[]` when it changed none. */
export type KeysOf<E extends EventShape> = (event: Recorded<E>) => string | readonly string[];

export interface ViewSignalsOptions<E extends EventShape> {
  view: string;
  store: EventStore<E>;
  types: readonly string[] | undefined;
  /** The view's category; absent: every stream. */
  category?: string | undefined;
  keysOf: KeysOf<E> | undefined;
  debounceMs: number | undefined;
  maxKeys: number | undefined;
  pollIntervalMs: number;
  logger: Logger;
  /** The durable checkpoint. */
  readCheckpoint: () => Promise<number | undefined>;
  /** The position of the last event of the view's types in (after, upTo]; 0 when there is none. */
  lastRelevant?: (after: number, upTo: number) => Promise<number>;
  /** True while this process runs the view (its own commits then feed the change feed). */
  isLeading: () => boolean;
  /** Hears the view's commits made elsewhere as they happen (`SqlViewBackend.watch`); without it, polls only. */
  watch?: (listener: ViewCommitListener) => ViewWatch;
  /** The lane whose checkpoint is the view's position (a view of one lane); undefined when partitioned. */
  positionLane?: string;
}

/** Events read to work out which keys another process changed, before giving up and saying "everything". */
const MAX_REMOTE_EVENTS = 1000;

/**
 * How often a waitFor still waiting looks again for the last event of the view up to its position: an
 * event deleted meanwhile (its stream deleted or truncated) is never applied, so it is not waited for.
 */
const RETARGET_MS = 1000;

/** The safety-net poll while commit hints arrive: they normally tell first. */
const HEARING_POLL_MS = 1000;

/**
 * How long the poll stays at `checkpointPollMs` after it found progress no hint had announced (a
 * writer that does not announce: an older eskit in a rolling upgrade, a proxy that drops NOTIFY).
 */
const UNHEARD_MS = 60_000;

/**
 * What every kind of view shares around its state: the change feed, read-your-writes waiting, and
 * following a view that another process runs.
 */
export class ViewSignals<E extends EventShape> {
  readonly changes: ChangeFeed;
  readonly #options: ViewSignalsOptions<E>;
  readonly #tracker: ProgressTracker;
  /** Hearing commit hints, while anyone waits or follows. */
  #watch: ViewWatch | undefined;
  /** The first `missed` after `watch` is the hearing starting, not a gap. */
  #heardBefore = false;
  /** How far another process's changes have been published (by a hint or a poll): never twice. */
  #announced: number | undefined;
  /** The highest position a hint announced; and until when (performance.now()) hints are not trusted. */
  #heardMax = -1;
  #unheardUntil = 0;
  /** Keys of other processes' changes being read, and the range waiting for that read to end. */
  #reading = false;
  #pending: { after: number; to: number } | undefined;

  constructor(options: ViewSignalsOptions<E>) {
    this.#options = options;
    this.changes = new ChangeFeed({ view: options.view, debounceMs: options.debounceMs, maxKeys: options.maxKeys, logger: options.logger });
    this.#tracker = new ProgressTracker({
      view: options.view,
      read: options.readCheckpoint,
      pollIntervalMs: () =>
        this.#watch?.hearing && performance.now() >= this.#unheardUntil ? Math.max(options.pollIntervalMs, HEARING_POLL_MS) : options.pollIntervalMs,
      logger: options.logger,
      onPolled: (from, to) => {
        if (this.#watch?.hearing && to > this.#heardMax) this.#unheardUntil = performance.now() + UNHEARD_MS;
        if (!this.#publishesRemote() || (this.#announced !== undefined && to <= this.#announced)) return;
        this.#remoteChange(Math.max(from, this.#announced ?? from), to);
        // Published: a hint of the same commits (heard after the read) must not publish them again.
        this.#announced = to;
      },
      onInterest: (active) => this.#hear(active),
    });
    let unfollow: (() => void) | undefined;
    this.changes.onActivity((active) => {
      unfollow?.();
      unfollow = active ? this.#tracker.follow() : undefined;
    });
  }

  /** The highest checkpoint this process knows of. */
  get position(): number | undefined {
    return this.#tracker.position;
  }

  /**
   * `events` were committed with the checkpoint at `position`, and the view as a whole is at `reached`:
   * `position` itself unpartitioned; partitioned, the lowest checkpoint of its partitions known here
   * (undefined: not known yet), since a partition's own checkpoint may be ahead of the others'.
   */
  committed(events: readonly Recorded<E>[], position: number, reached: number | undefined): void {
    if (reached !== undefined) this.#tracker.advance(reached);
    if (this.changes.listenerCount === 0) return;
    this.changes.publish(this.#keys(events), position);
  }

  /** The checkpoint moved without events being applied here (skipped events). */
  advanced(position: number): void {
    this.#tracker.advance(position);
  }

  /** The whole state was replaced (a rebuild was swapped in at `position`; the view is at `reached`). */
  replaced(position: number, reached: number | undefined): void {
    if (reached !== undefined) this.#tracker.advance(reached);
    this.changes.publish(undefined, position);
  }

  /**
   * Resolves once the view reflects every event up to `position` (the position an append returned):
   * its checkpoint reached it, or reached the last event of the view's types before it.
   */
  async waitFor(position: number, options: WaitForOptions = {}): Promise<void> {
    if (!Number.isSafeInteger(position) || position < 0) {
      throw new InvalidArgumentError(`waitFor needs a non-negative integer position (what an append returned), got ${String(position)}`);
    }
    const timeoutMs = options.timeoutMs ?? 5000;
    milliseconds('timeoutMs', timeoutMs, 0);
    options.signal?.throwIfAborted();
    const started = performance.now();
    let known = this.#tracker.position;
    if (known !== undefined && known >= position) return;
    // Hearing commits from elsewhere before reading the checkpoint: a commit in between is then
    // either read or heard, never neither.
    const stopFollowing = this.#tracker.follow();
    try {
      // Leading here, every commit arrives through `committed`; otherwise only a read can tell.
      if (known === undefined || !this.#options.isLeading()) known = await this.#tracker.refresh();
      const at = known ?? 0;
      if (at >= position) return;
      const lastRelevant = this.#options.lastRelevant ?? ((after: number, upTo: number) => this.#lastRelevant(after, upTo));
      // Always: even a view of every type never applies lifecycle events (a typed read skips them),
      // so a position that is one must not be waited for.
      let target = await lastRelevant(at, position);
      if (target <= at) return;
      const view = this.#options.view;
      for (;;) {
        const remaining = Math.max(0, Math.round(timeoutMs - (performance.now() - started)));
        const slice = Math.min(remaining, RETARGET_MS);
        try {
          await this.#tracker.wait(target, {
            timeoutMs: slice,
            reportedTimeoutMs: timeoutMs,
            signal: options.signal,
            describe: () =>
              `waitFor: view "${view}" reaching position ${position} (its checkpoint is at ${String(this.#tracker.position ?? 'none')}; ` +
              'is the view started, and is some node leading it?)',
          });
          return;
        } catch (error) {
          if (slice >= remaining || !isEskitError(error, ErrorCode.Timeout)) throw error;
        }
        // The events it waits for may have left the log since (their stream deleted or truncated):
        // the view never applies those, so wait only for what is still there.
        const now = this.#tracker.position ?? 0;
        target = await lastRelevant(now, target).catch(() => target);
        if (target <= now) return;
      }
    } finally {
      stopFollowing();
    }
  }

  #keys(events: readonly Recorded<E>[]): Iterable<string> | undefined {
    const keysOf = this.#options.keysOf;
    if (!keysOf) return undefined;
    const keys = new Set<string>();
    let current: Recorded<E> | undefined;
    try {
      for (const event of events) {
        current = event;
        const result = keysOf(event);
        if (typeof result === 'string') keys.add(result);
        else for (const key of result) keys.add(key);
      }
    } catch (thrown) {
      const error = current === undefined ? thrown : withheldIfPersonal(thrown, [current], current.position);
      this.#options.logger.warn({ view: this.#options.view, err: error }, `View "${this.#options.view}": keysOf threw; reporting that everything changed`);
      return undefined;
    }
    return keys;
  }

  #publishesRemote(): boolean {
    return !this.#options.isLeading() && this.changes.listenerCount > 0;
  }

  #hear(active: boolean): void {
    this.#watch?.stop();
    this.#watch = undefined;
    this.#heardBefore = false;
    if (!active || !this.#options.watch) return;
    this.#watch = this.#options.watch({ committed: (hint) => this.#heard(hint), missed: () => this.#missed() });
    // Already hearing (the connection was up for someone else): no `missed` marks the start, so the
    // next one is a reconnect after a gap.
    this.#heardBefore = this.#watch.hearing;
  }

  /** Another process (or view object) committed: waiters learn at once, listeners get its keys. */
  #heard(hint: ViewCommitHint): void {
    this.#heardMax = Math.max(this.#heardMax, hint.to);
    if (this.#publishesRemote()) {
      if (hint.swapped) {
        this.changes.publish(undefined, hint.to);
        this.#announced = Math.max(this.#announced ?? hint.to, hint.to);
      } else if (hint.lane !== this.#options.positionLane) {
        // A partition's commit: its own range (other partitions' events in it only add keys).
        this.#remoteChange(hint.from - 1, hint.to);
        this.#announced = Math.max(this.#announced ?? hint.to, hint.to);
      } else if (this.#announced === undefined || hint.to > this.#announced) {
        // From where the last hint or poll stopped, but not before this commit: every change to the
        // rows comes with a hint of its own, so what lies before it was announced already, or
        // published here as this process's own commits (while it led), or made while nobody listened.
        this.#remoteChange(Math.max(this.#announced ?? -1, hint.from - 1), hint.to);
        this.#announced = hint.to;
      }
    }
    // One lane: its checkpoint is the view's position. Partitioned (or swapped): the lowest of the
    // checkpoints, read.
    if (hint.lane === this.#options.positionLane && !hint.swapped) this.#tracker.advance(hint.to);
    else void this.#tracker.refresh();
  }

  /**
   * Hearing (again): commits made before announced nothing here, so read the checkpoint; and after a
   * gap (the connection was down), anything may have changed meanwhile.
   */
  #missed(): void {
    const heardBefore = this.#heardBefore;
    this.#heardBefore = true;
    void this.#tracker.refresh();
    if (heardBefore && this.#publishesRemote()) this.changes.publish(undefined, this.#tracker.position ?? 0);
  }

  /**
   * Another process moved the view over (after, to]: work out the keys from the events in between when
   * that is cheap. One read at a time per view; ranges that arrive meanwhile are merged into the next.
   */
  #remoteChange(after: number, to: number): void {
    const pending = this.#pending;
    this.#pending = pending ? { after: Math.min(pending.after, after), to: Math.max(pending.to, to) } : { after, to };
    if (this.#reading) return;
    this.#reading = true;
    void (async () => {
      try {
        while (this.#pending) {
          const range = this.#pending;
          this.#pending = undefined;
          await this.#publishRange(range.after, range.to);
        }
      } finally {
        this.#reading = false;
      }
    })();
  }

  async #publishRange(from: number, to: number): Promise<void> {
    const { store, types, category, keysOf } = this.#options;
    if (!keysOf) {
      this.changes.publish(undefined, to);
      return;
    }
    const events: Recorded<E>[] = [];
    try {
      for await (const event of store.readAll({ after: from, types, category, limit: MAX_REMOTE_EVENTS + 1 })) {
        if (event.position > to) break;
        events.push(event);
      }
    } catch {
      this.changes.publish(undefined, to);
      return;
    }
    this.changes.publish(events.length > MAX_REMOTE_EVENTS ? undefined : this.#keys(events), to);
  }

  /** The generic way: read the view's events after `after` (fine for the memory store and small lags). */
  async #lastRelevant(after: number, upTo: number): Promise<number> {
    let last = 0;
    const { store, types, category } = this.#options;
    for await (const event of store.readAll({ after, types: storedTypesOf(store, types), category, raw: true })) {
      if (event.position > upTo) break;
      if (!readsLifecycleRow(event.type, types)) continue;
      last = event.position;
    }
    return last;
  }
}
