import type { Backend } from '../core/backend.js';
import type { CheckpointStore } from '../core/checkpoint.js';
import { InvalidArgumentError } from '../core/errors.js';
import type { EventShape, Recorded } from '../core/event.js';
import { consoleLogger } from '../core/logger.js';
import type { EventStore } from '../core/store.js';
import { Subscription } from '../subscription/subscription.js';
import type { ChangeFeed } from './change-feed.js';
import type { WaitForOptions } from './progress.js';
import { ViewSignals } from './signals.js';
import { subscriptionOptionsOf } from './types.js';
import type { ViewOptions, ViewStatus } from './types.js';

export interface MemoryViewOptions<S, E extends EventShape> extends ViewOptions<E> {
  /** Where the events come from: any backend (`memory()`, `sqlite()`, `postgres()`), or give `store`. */
  backend?: Pick<Backend<E>, 'store'>;
  store?: EventStore<E>;
  /** The state before the first event. */
  initialState: S;
  /**
   * Returns the state after `event`. It must not change `state` in place: a batch whose evolve throws
   * is discarded whole, and that only works if the old state is untouched.
   */
  evolve: (state: S, event: Recorded<E>) => S;
}

/**
 * A view whose state lives in this process's memory: for the memory store, and for small derived
 * state on any backend (a lookup table, a counter). It is rebuilt from the log on every start of the
 * process (its checkpoint is in memory too), and each process that runs it keeps its own copy, so it
 * takes no leader lock.
 *
 * Exactly once: a batch is folded into a new state, and the state and its checkpoint are replaced
 * together in one synchronous step, after the whole batch succeeded.
 */
export class MemoryView<S, E extends EventShape = EventShape> {
  readonly name: string;
  readonly #subscription: Subscription<E>;
  readonly #signals: ViewSignals<E>;
  readonly #evolve: (state: S, event: Recorded<E>) => S;
  #state: S;
  #checkpoint: number | undefined;

  constructor(options: MemoryViewOptions<S, E>) {
    if (typeof options.evolve !== 'function') throw new InvalidArgumentError(`MemoryView "${String(options.name)}" needs an evolve(state, event) function.`);
    const store = options.store ?? options.backend?.store;
    if (store === undefined) throw new InvalidArgumentError(`MemoryView "${String(options.name)}" needs a backend (memory(), sqlite({ path }), postgres(...)) or a store.`);
    this.name = options.name;
    this.#evolve = options.evolve;
    this.#state = options.initialState;
    const logger = options.logger ?? consoleLogger();
    const checkpoints: CheckpointStore = {
      load: async () => this.#checkpoint,
      claim: async () => this.#checkpoint,
      save: async (_name, position) => {
        this.#checkpoint = position;
        this.#signals.advanced(position);
      },
      list: async () => [],
    };
    this.#subscription = new Subscription<E>({
      ...subscriptionOptionsOf(options),
      store,
      checkpoints,
      logger,
      batchHandler: (events) => this.#apply(events),
    }, { checkpointsInHandler: true, kind: 'view' });
    this.#signals = new ViewSignals<E>({
      view: options.name,
      store,
      types: options.types,
      keysOf: options.keysOf,
      debounceMs: options.debounceMs,
      maxKeys: options.maxKeys,
      pollIntervalMs: options.checkpointPollMs ?? 50,
      logger,
      readCheckpoint: async () => this.#checkpoint,
      isLeading: () => true,
    });
  }

  /** The current state (as of `position`). */
  get state(): S {
    return this.#state;
  }

  /** The position of the last event reflected in `state` (undefined before the first). */
  get position(): number | undefined {
    return this.#checkpoint;
  }

  /** "View changed" notifications, with the affected keys when the view has `keysOf`. */
  get changes(): ChangeFeed {
    return this.#signals.changes;
  }

  /** Starts following the log in the background (catching up first). */
  start(): Promise<void> {
    return this.#subscription.start();
  }

  /** Lets the batch in flight finish, then stops. Safe to call twice; the state stays. */
  stop(): Promise<void> {
    return this.#subscription.stop();
  }

  /** Resolves when stopped, rejects when the view failed for good: see `Subscription.done`. */
  get done(): Promise<void> {
    return this.#subscription.done;
  }

  async whenStopped(): Promise<ViewStatus> {
    await this.#subscription.whenStopped();
    return this.status();
  }

  async status(): Promise<ViewStatus> {
    return { ...(await this.#subscription.status()), setupVersion: 0, rebuilding: undefined };
  }

  /** Resolves once `state` reflects every event up to `position` (what an append returned). */
  waitFor(position: number, options?: WaitForOptions): Promise<void> {
    return this.#signals.waitFor(position, options);
  }

  #apply(events: readonly Recorded<E>[]): void {
    let state = this.#state;
    for (const event of events) state = this.#evolve(state, event);
    const position = (events[events.length - 1] as Recorded<E>).position;
    this.#state = state;
    this.#checkpoint = position;
    this.#signals.committed(events, position, position);
  }
}
