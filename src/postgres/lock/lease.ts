import { LockUnavailableError } from '../../core/errors.js';
import type { Lease } from '../../core/lock.js';
import type { Connection } from './connection.js';

/**
 * An error without a stack trace: the reason of a deliberate release points at no bug, and capturing a
 * stack would be most of what a release costs in this process.
 */
function stackless<T extends Error>(create: () => T): T {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return create();
  } finally {
    Error.stackTraceLimit = limit;
  }
}

export class PostgresLease implements Lease {
  // Made when first asked for: an acquire + release that never looks at the signal (a short critical
  // section) then costs no AbortController and no abort reason.
  #controller: AbortController | undefined;
  #endReason: (() => Error) | undefined;
  #released: Promise<void> | undefined;

  constructor(
    readonly name: string,
    readonly key: string,
    readonly fencingToken: number,
    /** The connection whose session holds the advisory lock. */
    readonly connection: Connection,
    private readonly onRelease: (lease: PostgresLease) => Promise<void>,
  ) {}

  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController();
      if (this.#endReason) this.#controller.abort(this.#endReason());
    }
    return this.#controller.signal;
  }

  /** Aborts the signal (released, lost, or closed); the lock itself is dealt with by the registry. */
  end(reason: Error | (() => Error)): void {
    if (this.#endReason) return;
    this.#endReason = typeof reason === 'function' ? reason : () => reason;
    this.#controller?.abort(this.#endReason());
  }

  release(): Promise<void> {
    if (this.#released) return this.#released;
    const wasLive = this.#endReason === undefined;
    this.end(() => stackless(() => new LockUnavailableError(`The lease on "${this.name}" (fencing token ${this.fencingToken}) was released.`)));
    // Lost or closed already: the registry has dealt with the lock.
    this.#released = wasLive ? this.onRelease(this) : Promise.resolve();
    return this.#released;
  }
}
