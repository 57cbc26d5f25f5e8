import { LockUnavailableError } from '../core/errors.js';
import type { Lease } from '../core/lock.js';
import type { Logger } from '../core/logger.js';

/** What a lease needs from its registry: the statements on its row, and where to report its end. */
export interface LeaseBackend {
  /** True when the row was still ours and unexpired, and now expires a ttl later. */
  renew(): boolean;
  release(): void;
  ended(lease: SqliteLease): void;
  translate(error: unknown, what: string): unknown;
  logger: Logger;
  ttlMs: number;
  marginMs: number;
  renewIntervalMs: number;
}

/**
 * A lease on a SQLite lock row: renews itself every `renewIntervalMs`, and gives itself up (aborting
 * its signal) when a renewal finds the row gone or fails twice, or its monotonic deadline passes.
 */
export class SqliteLease implements Lease {
  readonly #controller = new AbortController();
  readonly #backend: LeaseBackend;
  /**
   * performance.now() at which this holder gives the lease up: a margin before another node may take it
   * (a ttl after its last renewal began, by the database's clock and by the other node's own).
   */
  #deadline: number;
  #failures = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #ended = false;

  constructor(
    readonly name: string,
    readonly fencingToken: number,
    deadline: number,
    backend: LeaseBackend,
  ) {
    this.#deadline = deadline;
    this.#backend = backend;
    // Ref'd on purpose: a worker whose only job is a subscription must stay alive while it leads.
    this.#schedule();
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  async release(): Promise<void> {
    if (this.#ended) return;
    this.#end(new LockUnavailableError(`The lease on "${this.name}" (fencing token ${this.fencingToken}) was released.`));
    try {
      this.#backend.release();
    } catch (error) {
      throw this.#backend.translate(error, `release lock "${this.name}"`);
    } finally {
      this.#backend.ended(this);
    }
  }

  #schedule(): void {
    const wait = Math.max(0, Math.min(this.#backend.renewIntervalMs, this.#deadline - performance.now()));
    this.#timer = setTimeout(() => this.#renew(), wait);
  }

  #renew(): void {
    this.#timer = undefined;
    if (this.#ended) return;
    const started = performance.now();
    if (started >= this.#deadline) {
      this.#lose(`it was not renewed within its ttl of ${this.#ttl()} (was this process frozen, starved or blocked?)`);
      return;
    }
    let renewed: boolean;
    try {
      renewed = this.#backend.renew();
    } catch (error) {
      const translated = this.#backend.translate(error, `renew lock "${this.name}"`);
      this.#failures += 1;
      if (this.#failures >= 2) {
        this.#lose('renewing it failed twice in a row', translated);
        return;
      }
      this.#backend.logger.warn({ lock: this.name, fencingToken: this.fencingToken, err: translated }, `Renewing lock "${this.name}" failed; trying again`);
      this.#schedule();
      return;
    }
    if (!renewed) {
      this.#lose('the database says it expired or another node took it over');
      return;
    }
    this.#failures = 0;
    this.#deadline = started + this.#backend.ttlMs - this.#backend.marginMs;
    // A renewal that waited on a busy database may come back too late to count.
    if (performance.now() >= this.#deadline) {
      this.#lose(`its renewal took longer than its ttl of ${this.#ttl()}`);
      return;
    }
    this.#schedule();
  }

  #ttl(): string {
    const { ttlMs, marginMs } = this.#backend;
    return marginMs > 0 ? `${ttlMs} ms less a margin of ${marginMs} ms` : `${ttlMs} ms`;
  }

  #end(reason: Error): void {
    this.#ended = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#controller.abort(reason);
  }

  #lose(reason: string, cause?: unknown): void {
    const error = new LockUnavailableError(
      `Lost the lease on "${this.name}" (fencing token ${this.fencingToken}): ${reason}. Stop work guarded by it; acquire the lock again to go on.`,
      { cause },
    );
    this.#end(error);
    this.#backend.logger.warn({ lock: this.name, fencingToken: this.fencingToken, err: error }, error.message);
    try {
      // Conditional on the token: frees the row for the next holder unless another node already took it.
      this.#backend.release();
    } catch {
      // The row expires by itself; nothing else to do.
    } finally {
      this.#backend.ended(this);
    }
  }
}
