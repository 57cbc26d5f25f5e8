import { InvalidArgumentError } from '../core/errors.js';
import { consoleLogger } from '../core/logger.js';
import { milliseconds } from '../core/validate.js';
import type { Logger } from '../core/logger.js';

/** "View X changed": what a listener of a view's change feed receives. */
export interface ViewChange {
  view: string;
  /**
   * The keys whose state changed (from the view's `keysOf`), at most `maxKeys` of them. `undefined`
   * means anything may have changed: the view has no `keysOf`, more keys changed than the cap allows,
   * the view was rebuilt, or another process moved it. Reload everything you show then.
   */
  keys: readonly string[] | undefined;
  /** The view's checkpoint once the change was committed. */
  position: number;
}

/**
 * Called with each change. A listener that returns a promise gets no further call until it settles;
 * changes that arrive meanwhile are merged into one (so a slow listener costs bounded memory and
 * never holds up the view or the other listeners).
 */
export type ChangeListener = (change: ViewChange) => void | Promise<void>;

export interface ChangeSubscribeOptions {
  /** Ends the subscription (an iterator finishes; a callback is no longer called). */
  signal?: AbortSignal;
}

export interface ChangeFeedOptions {
  view: string;
  /** After a delivery, changes within this many milliseconds are delivered as one. Default 10. */
  debounceMs?: number;
  /**
   * The most keys a change carries, and the most a listener keeps pending: beyond it they collapse to
   * "everything changed". Default 1000.
   */
  maxKeys?: number;
  logger?: Logger;
}

/** Keys waiting for delivery: a set, or null for "everything". */
type Keys = Set<string> | null;

class Subscriber {
  /** A change not yet delivered (kept as it was published until a second one has to be merged in). */
  waiting: ViewChange | undefined;
  merged: { keys: Keys; position: number } | undefined;
  /** A callback whose returned promise has not settled. */
  busy = false;
  closed = false;
  /** The `next()` of an iterator that is waiting for a change. */
  reader: ((result: IteratorResult<ViewChange>) => void) | undefined;
  detach: (() => void) | undefined;

  constructor(readonly listener: ChangeListener | undefined) {}

  /** Merges `change` into what is pending, keeping at most `maxKeys` keys. */
  hold(change: ViewChange, maxKeys: number): void {
    if (this.waiting === undefined && this.merged === undefined) {
      this.waiting = change;
      return;
    }
    if (this.merged === undefined) {
      const first = this.waiting as ViewChange;
      this.merged = { keys: first.keys === undefined ? null : new Set(first.keys), position: first.position };
      this.waiting = undefined;
    }
    const merged = this.merged;
    merged.position = Math.max(merged.position, change.position);
    if (merged.keys === null) return;
    if (change.keys === undefined) {
      merged.keys = null;
      return;
    }
    for (const key of change.keys) {
      merged.keys.add(key);
      if (merged.keys.size > maxKeys) {
        merged.keys = null;
        return;
      }
    }
  }

  take(view: string): ViewChange | undefined {
    if (this.waiting !== undefined) {
      const change = this.waiting;
      this.waiting = undefined;
      return change;
    }
    const merged = this.merged;
    if (merged === undefined) return undefined;
    this.merged = undefined;
    return { view, keys: merged.keys === null ? undefined : [...merged.keys], position: merged.position };
  }
}

/**
 * Fans a view's changes out to any number of listeners (server-sent events, caches, UI pushes).
 *
 * Publishing is cheap and never waits for a listener. A change is handed to every listener in one pass
 * right after the publishing turn of the event loop (what that turn published is merged); after a
 * delivery, changes are collected for `debounceMs` and delivered together: a quiet view is pushed at
 * once, a busy one at most once per `debounceMs`. Each listener holds at most one undelivered change, whose keys
 * are merged and capped, so a listener that stops reading costs a bounded amount of memory, and the
 * view and the other listeners carry on.
 */
export class ChangeFeed {
  readonly view: string;
  readonly #debounceMs: number;
  readonly #maxKeys: number;
  readonly #logger: Logger;
  readonly #subscribers = new Set<Subscriber>();
  readonly #activity = new Set<(active: boolean) => void>();
  #keys: Keys | undefined;
  #position = 0;
  #scheduled = false;
  /** When the last delivery went out (performance.now()); -Infinity before the first. */
  #deliveredAt = -Infinity;

  constructor(options: ChangeFeedOptions) {
    this.view = options.view;
    this.#debounceMs = milliseconds('debounceMs', options.debounceMs ?? 10, 0);
    this.#maxKeys = nonNegative('maxKeys', options.maxKeys ?? 1000);
    this.#logger = options.logger ?? consoleLogger();
  }

  /** Listeners subscribed right now. */
  get listenerCount(): number {
    return this.#subscribers.size;
  }

  /** Calls `listener` with each change; returns the function that unsubscribes it. */
  subscribe(listener: ChangeListener, options?: ChangeSubscribeOptions): () => void;
  /** An async iterator of changes; ends when `signal` aborts or the loop breaks out. */
  subscribe(options?: ChangeSubscribeOptions): AsyncIterableIterator<ViewChange>;
  subscribe(
    listenerOrOptions?: ChangeListener | ChangeSubscribeOptions,
    maybeOptions?: ChangeSubscribeOptions,
  ): (() => void) | AsyncIterableIterator<ViewChange> {
    const listener = typeof listenerOrOptions === 'function' ? listenerOrOptions : undefined;
    const options = (typeof listenerOrOptions === 'function' ? maybeOptions : listenerOrOptions) ?? {};
    if (listenerOrOptions !== undefined && typeof listenerOrOptions !== 'function' && typeof listenerOrOptions !== 'object') {
      throw new InvalidArgumentError('changes.subscribe() takes a listener function or an options object ({ signal }).');
    }
    const subscriber = new Subscriber(listener);
    const close = (): void => {
      if (subscriber.closed) return;
      subscriber.closed = true;
      subscriber.waiting = undefined;
      subscriber.merged = undefined;
      subscriber.detach?.();
      this.#subscribers.delete(subscriber);
      const reader = subscriber.reader;
      subscriber.reader = undefined;
      reader?.({ value: undefined, done: true });
      if (this.#subscribers.size === 0) this.#announce(false);
    };
    const signal = options.signal;
    if (signal?.aborted) {
      subscriber.closed = true;
    } else {
      if (signal) {
        signal.addEventListener('abort', close, { once: true });
        subscriber.detach = () => signal.removeEventListener('abort', close);
      }
      this.#subscribers.add(subscriber);
      if (this.#subscribers.size === 1) this.#announce(true);
    }
    if (listener) return close;

    const iterator: AsyncIterableIterator<ViewChange> = {
      next: () => {
        if (subscriber.closed) return Promise.resolve({ value: undefined, done: true });
        const change = subscriber.take(this.view);
        if (change) return Promise.resolve({ value: change, done: false });
        if (subscriber.reader) return Promise.reject(new InvalidArgumentError('changes iterator: await each next() before calling it again.'));
        return new Promise((resolve) => (subscriber.reader = resolve));
      },
      return: () => {
        close();
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]() {
        return iterator;
      },
    };
    return iterator;
  }

  /**
   * Records that the view changed up to `position`: `keys` are the affected keys, or undefined for
   * "anything". Delivered after the debounce interval, merged with whatever else arrives meanwhile.
   */
  publish(keys: Iterable<string> | undefined, position: number): void {
    if (this.#subscribers.size === 0) return;
    this.#position = Math.max(this.#position, position);
    if (keys === undefined) {
      this.#keys = null;
    } else if (this.#keys !== null) {
      const pending = (this.#keys ??= new Set());
      for (const key of keys) {
        pending.add(key);
        if (pending.size > this.#maxKeys) {
          this.#keys = null;
          break;
        }
      }
    }
    if (!this.#scheduled) {
      // Not rearmed by later changes: a steady stream is delivered every debounceMs, not never.
      this.#scheduled = true;
      const wait = this.#deliveredAt + this.#debounceMs - performance.now();
      if (wait > 0) setTimeout(() => this.#flush(), wait);
      else setImmediate(() => this.#flush());
    }
  }

  /** `listener(true)` when the first subscriber arrives, `listener(false)` when the last one leaves. */
  onActivity(listener: (active: boolean) => void): () => void {
    this.#activity.add(listener);
    return () => this.#activity.delete(listener);
  }

  #flush(): void {
    this.#scheduled = false;
    this.#deliveredAt = performance.now();
    const keys = this.#keys;
    this.#keys = undefined;
    if (keys === undefined) return;
    // One change object shared by every listener (frozen, since they all see it).
    const change: ViewChange = Object.freeze({
      view: this.view,
      keys: keys === null ? undefined : Object.freeze([...keys]),
      position: this.#position,
    });
    for (const subscriber of [...this.#subscribers]) {
      if (subscriber.closed) continue;
      if (subscriber.reader) {
        const reader = subscriber.reader;
        subscriber.reader = undefined;
        reader({ value: change, done: false });
      } else if (subscriber.listener && !subscriber.busy) {
        this.#call(subscriber, change);
      } else {
        subscriber.hold(change, this.#maxKeys);
      }
    }
  }

  #call(subscriber: Subscriber, change: ViewChange): void {
    const listener = subscriber.listener as ChangeListener;
    let result: void | Promise<void>;
    try {
      result = listener(change);
    } catch (error) {
      this.#logger.warn({ view: this.view, err: error }, `View "${this.view}": a change listener threw; it stays subscribed`);
      return;
    }
    if (!isPromise(result)) return;
    subscriber.busy = true;
    const settled = (): void => {
      subscriber.busy = false;
      if (subscriber.closed) return;
      const next = subscriber.take(this.view);
      if (next) this.#call(subscriber, next);
    };
    result.then(settled, (error: unknown) => {
      this.#logger.warn({ view: this.view, err: error }, `View "${this.view}": a change listener failed; it stays subscribed`);
      settled();
    });
  }

  #announce(active: boolean): void {
    for (const listener of this.#activity) {
      try {
        listener(active);
      } catch (error) {
        this.#logger.warn({ view: this.view, err: error }, `View "${this.view}": a change feed activity hook threw`);
      }
    }
  }
}

function isPromise(value: unknown): value is Promise<void> {
  return typeof value === 'object' && value !== null && typeof (value as { then?: unknown }).then === 'function';
}

function nonNegative(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 0) throw new InvalidArgumentError(`${name} must be a non-negative integer, got ${String(value)}`);
  return value;
}
