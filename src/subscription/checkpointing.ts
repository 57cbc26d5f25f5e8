import type { CheckpointStore } from '../core/checkpoint.js';
import { unlessAborted, within } from '../core/deadline.js';
import { ErrorCode, InvalidArgumentError, isEskitError } from '../core/errors.js';
import type { FencedError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { backoffDelay, delay } from '../core/retry.js';
import type { RetryPolicy } from '../core/retry.js';
import type { StartFrom } from './types.js';

export interface CheckpointerOptions {
  name: string;
  checkpoints: CheckpointStore;
  fencingToken: number | undefined;
  /** Where this leadership started (the claimed or start position): saved already. */
  position: number;
  /** The furthest position the checkpoint may go now. */
  target(): number;
  /** Leadership was lost: give up a save that keeps failing. */
  lost(): boolean;
  /**
   * Fires at stop(): from then on a save gives up after a few tries, and each call (one in flight
   * included) after `stopCallTimeoutMs`.
   */
  stopSignal: AbortSignal;
  stopCallTimeoutMs: number;
  retry: RetryPolicy;
  pollIntervalMs: number;
  logger: Logger;
  /** The checkpoint is saved at `position` (by a save, or by the handler itself). */
  onSaved(position: number): void;
  /** A save was fenced: a newer token claimed the checkpoint. */
  onFenced(error: FencedError): void;
}

/**
 * Saves one leadership's checkpoint: one save at a time, whoever asks (the runner between batches, or
 * outstanding work that finished items), each save taking the target as it is when it starts, so that
 * two saves can never land out of order and move the checkpoint back.
 */
export class Checkpointer {
  #saved: number;
  #savedAt = performance.now();
  #tail: Promise<unknown> = Promise.resolve();
  /** A save timed out while stopping: the database is not answering, so later saves give up at once. */
  #unanswered = false;
  /** A save was fenced: this leadership is over, and no later save is tried (it would be fenced too). */
  #fenced: FencedError | undefined;

  constructor(private readonly options: CheckpointerOptions) {
    this.#saved = options.position;
  }

  get saved(): number {
    return this.#saved;
  }

  /** True when the last save is older than `intervalMs` (saves while catching up are rate-limited). */
  due(intervalMs: number): boolean {
    return performance.now() - this.#savedAt >= intervalMs;
  }

  /** The handler saved the checkpoint in its own transaction (a view). */
  savedByHandler(position: number): void {
    if (position <= this.#saved) return;
    this.#saved = position;
    this.options.onSaved(position);
  }

  /**
   * Saves the target when it moved past the saved position. Returns the FencedError when the save was
   * fenced (also reported to `onFenced`); a save that could not be made ('unsaved') returns undefined:
   * what it would have covered is delivered again later, which at-least-once allows.
   */
  save(): Promise<FencedError | undefined> {
    const run = this.#tail.then(() => this.#saveTarget());
    this.#tail = run.catch(() => undefined);
    return run;
  }

  async #saveTarget(): Promise<FencedError | undefined> {
    if (this.#fenced) return this.#fenced;
    const to = this.options.target();
    if (to <= this.#saved) return undefined;
    this.#savedAt = performance.now();
    const result = await this.#write(to);
    if (result === 'saved') {
      this.#saved = to;
      this.options.onSaved(to);
      return undefined;
    }
    if (result === 'unsaved') return undefined;
    this.#fenced = result;
    this.options.onFenced(result);
    return result;
  }

  /**
   * Retries transient failures (a dropped connection, a busy SQLite file). Gives up ('unsaved') when
   * leadership is lost, or once stopping after a few tries or a call that took too long.
   */
  async #write(position: number): Promise<'saved' | 'unsaved' | FencedError> {
    const { checkpoints, name, fencingToken, logger } = this.options;
    const { stopSignal } = this.options;
    if (this.#unanswered) return 'unsaved';
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#bounded(checkpoints.save(name, position, { fencingToken }));
        return 'saved';
      } catch (error) {
        if (isEskitError(error, ErrorCode.Fenced)) return error as FencedError;
        if (stopSignal.aborted && isEskitError(error, ErrorCode.Timeout)) {
          this.#unanswered = true;
          logger.warn({ subscription: name, position, err: error }, `Subscription "${name}": the final checkpoint save did not answer; giving it up (what it covered is delivered again)`);
          return 'unsaved';
        }
        if (!isTransient(error)) throw error;
        logger.warn({ subscription: name, position, attempt, err: error }, `Subscription "${name}": saving the checkpoint failed; retrying`);
      }
      if (this.options.lost() || (stopSignal.aborted && attempt >= 3)) return 'unsaved';
      await delay(Math.min(this.options.pollIntervalMs, backoffDelay(this.options.retry, attempt)));
    }
  }

  /** Waits for a save; once stopping (also when stop() comes while it runs), for `stopCallTimeoutMs` at most. */
  async #bounded(saving: Promise<void>): Promise<void> {
    const { stopSignal, stopCallTimeoutMs, name } = this.options;
    if (!stopSignal.aborted && (await unlessAborted(saving, stopSignal, STOPPED)) !== STOPPED) return;
    await within(saving, stopCallTimeoutMs, `Subscription "${name}": saving the checkpoint while stopping`);
  }
}

const STOPPED: unique symbol = Symbol('stopped');

export interface StartOptions {
  name: string;
  checkpoints: CheckpointStore;
  store: { headPosition(): Promise<number> };
  startFrom: StartFrom | undefined;
  retry: RetryPolicy;
  pollIntervalMs: number;
  logger: Logger;
}

/**
 * Where a leadership starts: the checkpoint (claimed with the token), or the start position when there
 * is none. Transient failures (a dropped connection, a busy SQLite file, a database restarting while a
 * standby takes over) are retried with backoff until stopped or the lease is lost: a new leader must
 * not fail for good over one of them.
 */
export async function loadStart(o: StartOptions, token: number | undefined, signal: AbortSignal): Promise<number | { fenced: FencedError } | 'stopped'> {
  for (let attempt = 1; ; attempt++) {
    try {
      // A database that stopped answering must not hold a stop(): nothing was done yet to wait for.
      return await unlessAborted(claimStart(o, token), signal, 'stopped' as const);
    } catch (error) {
      if (isEskitError(error, ErrorCode.Fenced)) return { fenced: error as FencedError };
      if (!isTransient(error)) throw error;
      o.logger.warn({ subscription: o.name, attempt, err: error }, `Subscription "${o.name}": reading its checkpoint failed; retrying`);
    }
    if (signal.aborted) return 'stopped';
    await delay(Math.min(o.pollIntervalMs, backoffDelay(o.retry, attempt)), signal).catch(() => undefined);
    if (signal.aborted) return 'stopped';
  }
}

async function claimStart(o: StartOptions, token: number | undefined): Promise<number> {
  const { checkpoints, name } = o;
  const stored = token === undefined ? await checkpoints.load(name) : await checkpoints.claim(name, token);
  if (stored !== undefined) return stored;
  const start = await startPosition(o);
  // 'end' is the head NOW: saved before anything is read, or a stop or crash before the first event
  // would let the next start take a later head and skip what was appended in between. The other
  // start positions come out the same every time.
  if (o.startFrom === 'end') await checkpoints.save(name, start, { fencingToken: token });
  return start;
}

async function startPosition(o: StartOptions): Promise<number> {
  const from = o.startFrom ?? 'beginning';
  if (from === 'beginning') return 0;
  if (from === 'end') return o.store.headPosition();
  if (!Number.isSafeInteger(from.after) || from.after < 0) {
    throw new InvalidArgumentError(`startFrom.after must be a non-negative integer, got ${String(from.after)}`);
  }
  return from.after;
}

/**
 * Failures that can heal by waiting: anything that is not an eskit error, a busy database, and a
 * connection error that says so (refused, lost, timed out: a database restarting must not stop a
 * runner for good). A refused login or a missing database is not: it is reported, not retried.
 */
export function isTransient(error: unknown): boolean {
  if (isEskitError(error, ErrorCode.Connection)) return (error as { transient?: unknown }).transient === true;
  return !isEskitError(error) || isEskitError(error, ErrorCode.StoreBusy);
}
