import type { Recorded } from '../core/event.js';

export interface ExecuteContext {
  automation: string;
  /** The lease's token while leader election is on: pass it to systems that can check it. */
  fencingToken: number | undefined;
  /** 1 on the first attempt. */
  attempt: number;
  /**
   * Fires when the attempt timed out, leadership was lost, or stop() gave up waiting for it: stop the
   * side effect if you can. Until the attempt settles its key stays busy (the next attempt and the
   * next item of that key wait). Made when first read (a getter of the context, so `{ ...context }`
   * does not carry it): pass `context.signal` itself.
   */
  readonly signal: AbortSignal;
  /** The event that produced the item. */
  event: Recorded;
  /** True when an operator asked to run a dead letter again. */
  redrive: boolean;
}

/**
 * What `execute` gets. A class, not a literal with a getter: one is made per attempt, and the signal
 * (an AbortController and AbortSignal.any) only when `execute` reads it.
 */
export class AttemptContext implements ExecuteContext {
  #signal: AbortSignal | undefined;
  #timeout: AbortController | undefined;
  #expired: Error | undefined;
  readonly #lose: AbortSignal;
  readonly fencingToken: number | undefined;

  constructor(
    readonly automation: string,
    period: { readonly fencingToken: number | undefined; readonly lose: AbortController },
    readonly attempt: number,
    readonly event: Recorded,
    readonly redrive: boolean,
  ) {
    this.fencingToken = period.fencingToken;
    this.#lose = period.lose.signal;
  }

  get signal(): AbortSignal {
    if (!this.#signal) {
      this.#timeout = new AbortController();
      if (this.#expired) this.#timeout.abort(this.#expired);
      this.#signal = AbortSignal.any([this.#lose, this.#timeout.signal]);
    }
    return this.#signal;
  }

  /** The attempt timed out: fires the signal if `execute` took it (or when it does). Static: not on the context users see. */
  static expire(context: AttemptContext, error: Error): void {
    context.#expired = error;
    context.#timeout?.abort(error);
  }
}

export function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as { then?: unknown } | null)?.then === 'function';
}
