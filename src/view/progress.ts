import { TimeoutError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';

export interface WaitForOptions {
  /** Give up after this long with `ESKIT_TIMEOUT`. Default 5000. */
  timeoutMs?: number;
  /** Stop waiting (rejects with the signal's reason). */
  signal?: AbortSignal;
}

interface Waiter {
  target: number;
  resolve: () => void;
}

export interface ProgressTrackerOptions {
  view: string;
  /** Reads the view's durable checkpoint (another process may be the one moving it). */
  read: () => Promise<number | undefined>;
  /** How often the checkpoint is read while someone waits or follows (asked before each poll). */
  pollIntervalMs: number | (() => number);
  /** The checkpoint moved from `from` to `to`, as a poll saw it (not through `advance`). */
  onPolled?: (from: number, to: number) => void;
  /** `true` when the first waiter or follower arrives, `false` when the last one leaves. */
  onInterest?: (active: boolean) => void;
  logger: Logger;
}

/**
 * What a view knows of its checkpoint, and who waits for it to reach a position. Progress made in
 * this process arrives through `advance` at once; progress made elsewhere (a view run by another
 * process, a rebuild swapped in by another process) is found by reading the checkpoint every
 * `pollIntervalMs`, but only while someone waits or follows.
 */
export class ProgressTracker {
  readonly #options: ProgressTrackerOptions;
  readonly #waiters = new Set<Waiter>();
  #known: number | undefined;
  #followers = 0;
  #timer: NodeJS.Timeout | undefined;
  #polling: Promise<void> | undefined;
  /** The read to start once the one in flight ends (asked for meanwhile). */
  #next: Promise<void> | undefined;
  #interestShown = false;

  constructor(options: ProgressTrackerOptions) {
    this.#options = options;
  }

  /** The highest checkpoint seen (undefined before the first commit or read). */
  get position(): number | undefined {
    return this.#known;
  }

  /** The checkpoint reached `position` (in this process: just committed). */
  advance(position: number): void {
    if (this.#known !== undefined && position <= this.#known) return;
    this.#known = position;
    for (const waiter of [...this.#waiters]) {
      if (position >= waiter.target) waiter.resolve();
    }
  }

  /**
   * Reads the checkpoint now; returns the highest position known after it. Asked while a read is in
   * flight, it reads once more after that one: the read in flight may have begun before what the
   * caller learned of (a commit hint), and would miss it. Those asking meanwhile share that one next
   * read, and each caller waits for at most two reads, however many more are asked for meanwhile.
   */
  async refresh(): Promise<number | undefined> {
    await this.#read();
    return this.#known;
  }

  #read(): Promise<void> {
    if (!this.#polling) {
      this.#polling = this.#poll().finally(() => (this.#polling = undefined));
      return this.#polling;
    }
    this.#next ??= this.#polling.then(() => {
      this.#next = undefined;
      // A read someone began once the last one ended began after this was asked for: it will do.
      return this.#polling ?? this.#read();
    });
    return this.#next;
  }

  /** Keeps polling while the returned function has not been called (a change feed with listeners). */
  follow(): () => void {
    this.#followers += 1;
    this.#interestChanged();
    this.#schedule();
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.#followers -= 1;
      this.#interestChanged();
    };
  }

  /** Resolves once the checkpoint reaches `target`; `describe` explains a timeout. */
  wait(target: number, options: WaitForOptions & { describe: () => string; reportedTimeoutMs?: number }): Promise<void> {
    if (this.#known !== undefined && this.#known >= target) return Promise.resolve();
    const timeoutMs = options.timeoutMs ?? 5000;
    const signal = options.signal;
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      const settle = (): boolean => {
        if (!this.#waiters.delete(waiter)) return false;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.#interestChanged();
        return true;
      };
      const onAbort = (): void => {
        if (settle()) reject(signal?.reason);
      };
      const waiter: Waiter = {
        target,
        resolve: () => {
          if (settle()) resolve();
        },
      };
      const timer = setTimeout(() => {
        if (settle()) reject(new TimeoutError(options.describe(), options.reportedTimeoutMs ?? timeoutMs));
      }, timeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.add(waiter);
      this.#interestChanged();
      this.#schedule();
    });
  }

  #interested(): boolean {
    return this.#waiters.size > 0 || this.#followers > 0;
  }

  #interestChanged(): void {
    const interested = this.#interested();
    if (interested === this.#interestShown) return;
    this.#interestShown = interested;
    if (!interested) {
      // Nobody waits or follows: no poll after the last answer (it would read a store that may be
      // closed by then, and warn).
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    try {
      this.#options.onInterest?.(interested);
    } catch (error) {
      this.#options.logger.warn({ view: this.#options.view, err: error }, `View "${this.#options.view}": starting or stopping to hear its commits failed`);
    }
  }

  #schedule(): void {
    if (this.#timer !== undefined || !this.#interested()) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (!this.#interested()) return;
      void this.refresh().finally(() => this.#schedule());
    }, typeof this.#options.pollIntervalMs === 'function' ? this.#options.pollIntervalMs() : this.#options.pollIntervalMs);
    // Waiters hold their own timeout timer; a follower alone must not keep the process alive.
    this.#timer.unref();
  }

  async #poll(): Promise<void> {
    let position: number | undefined;
    try {
      position = await this.#options.read();
    } catch (error) {
      // The next poll tries again; a waiter's timeout bounds how long that can go on.
      this.#options.logger.warn({ view: this.#options.view, err: error }, `View "${this.#options.view}": reading its checkpoint failed`);
      return;
    }
    if (position === undefined) return;
    const before = this.#known;
    this.advance(position);
    if (before !== undefined && position > before) this.#options.onPolled?.(before, position);
  }
}
