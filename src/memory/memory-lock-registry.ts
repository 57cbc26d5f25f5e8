import type { AcquireOptions, Lease, LockRegistry } from '../core/lock.js';
import { InvalidArgumentError, LockUnavailableError } from '../core/errors.js';

interface Waiter {
  grant: (lease: Lease) => void;
  fail: (error: Error) => void;
}

interface LockState {
  lastToken: number;
  holder: MemoryLease | undefined;
  waiters: Waiter[];
}

class MemoryLease implements Lease {
  readonly #controller = new AbortController();
  constructor(
    readonly name: string,
    readonly fencingToken: number,
    private readonly onRelease: (lease: MemoryLease) => void,
  ) {}

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  lose(reason: string): void {
    if (!this.#controller.signal.aborted) this.#controller.abort(new LockUnavailableError(reason));
  }

  async release(): Promise<void> {
    if (this.#controller.signal.aborted) return;
    this.lose(`lease "${this.name}" was released`);
    this.onRelease(this);
  }
}

/**
 * Leader election inside one process: every "node" shares this instance. For tests and examples;
 * `revoke()` simulates a lease lost to a timeout, to exercise fencing.
 */
export class MemoryLockRegistry implements LockRegistry {
  readonly #locks = new Map<string, LockState>();
  #closed = false;

  async acquire(name: string, options: AcquireOptions = {}): Promise<Lease> {
    if (typeof name !== 'string' || name.length === 0) throw new InvalidArgumentError('A lock needs a non-empty name');
    if (this.#closed) throw new LockUnavailableError('The lock registry is closed; create a new one.');
    options.signal?.throwIfAborted();
    const state = this.#state(name);
    if (!state.holder) return this.#grant(name, state);
    return new Promise<Lease>((resolve, reject) => {
      let settled = false;
      const settle = (): boolean => {
        if (settled) return false;
        settled = true;
        options.signal?.removeEventListener('abort', onAbort);
        state.waiters = state.waiters.filter((w) => w !== waiter);
        return true;
      };
      const waiter: Waiter = {
        grant: (lease) => {
          if (settle()) resolve(lease);
        },
        fail: (error) => {
          if (settle()) reject(error);
        },
      };
      const onAbort = (): void => waiter.fail(options.signal?.reason as Error);
      options.signal?.addEventListener('abort', onAbort, { once: true });
      state.waiters.push(waiter);
      // Called once the waiter is queued and listening: an abort, a release or a close() from inside
      // onWaiting is heard, instead of leaving the acquire pending for good. A throw fails the acquire
      // unless it was granted meanwhile.
      try {
        options.onWaiting?.();
      } catch (error) {
        waiter.fail(error as Error);
      }
    });
  }

  /** The current holder's fencing token, if any. */
  holderToken(name: string): number | undefined {
    return this.#locks.get(name)?.holder?.fencingToken;
  }

  /** Takes the lease from its holder (as an expiry would) and hands it to the next waiter. */
  revoke(name: string): void {
    const state = this.#locks.get(name);
    const holder = state?.holder;
    if (!state || !holder) return;
    holder.lose(`lease "${name}" was revoked`);
    this.#handOver(name, state, holder);
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const [name, state] of this.#locks) {
      this.revoke(name);
      for (const waiter of state.waiters.splice(0)) waiter.fail(new LockUnavailableError('The lock registry was closed while waiting.'));
    }
  }

  #state(name: string): LockState {
    let state = this.#locks.get(name);
    if (!state) {
      state = { lastToken: 0, holder: undefined, waiters: [] };
      this.#locks.set(name, state);
    }
    return state;
  }

  #grant(name: string, state: LockState): MemoryLease {
    state.lastToken += 1;
    const lease = new MemoryLease(name, state.lastToken, (released) => this.#handOver(name, state, released));
    state.holder = lease;
    return lease;
  }

  #handOver(name: string, state: LockState, previous: MemoryLease): void {
    if (state.holder !== previous) return;
    state.holder = undefined;
    const next = this.#closed ? undefined : state.waiters.shift();
    if (next) next.grant(this.#grant(name, state));
  }
}
