// What a PostgresEventStore adds around its own subject key store: the key store made before the
// store has its pool (a handle read at first use), and the key cache kept in step with other
// processes' forgets (the `subjects` channel heard while keys may be cached).
import type { HintListener } from './append-listener.js';
import type { PostgresStoreHandle } from './table-access.js';

/**
 * How long the store's key cache keeps a subject's key found in the table (keyCacheMs) when the key
 * store is its own: a key is read once per subject per 30 s rather than on every append and page.
 * Other processes' forgets are heard meanwhile (see ForgetHearing).
 */
export const DEFAULT_KEY_CACHE_MS = 30_000;

/**
 * A handle whose parts are read from `store()` when used: the event store passes its key store to its
 * base class's constructor, before it has a pool and a schema of its own.
 */
export function lateHandle(store: () => PostgresStoreHandle | undefined): PostgresStoreHandle {
  const now = (): PostgresStoreHandle => store() as PostgresStoreHandle;
  return {
    get schema() {
      return now().schema;
    },
    get pool() {
      return now().pool;
    },
    get closed() {
      return store()?.closed ?? false;
    },
    migrate: () => now().migrate(),
  };
}

export interface ForgetHearingOptions {
  /** How long the key cache keeps a key (ms); 0: it keeps none, and nothing is heard. */
  cacheMs: number;
  /** Starts hearing the `subjects` channel (over the store's LISTEN connection); returns the remover. */
  hear: (listener: Required<HintListener>) => () => void;
  /** Drops these key ids from the key cache; undefined: every live key. */
  evict: (kids?: readonly string[]) => void;
  /** True while the LISTEN connection is lost and not back yet: forgets announced meanwhile go unheard. */
  deaf: () => boolean;
  closed: () => boolean;
}

/**
 * Keeps the key cache in step with other processes' forgets: every forget announces the key ids it
 * destroyed on the schema's `subjects` channel, and while the cache may hold keys (for `cacheMs`
 * after the key store last handed one out) those are dropped from it as they are heard. Only then: a
 * process that never reads personal data is spared the LISTEN connection (a server session).
 *
 * Forgets announced while LISTEN is not in place are not heard. So the whole cache is dropped the
 * moment the LISTEN connection is lost (`lost`), and nothing read while it is down is cached: it may
 * stay down for long (a server at its connection limit, a network split between the LISTEN socket and
 * the pool), and the cached keys would be used for up to `cacheMs` after their subject was forgotten.
 * Each time LISTEN is (re)connected the whole cache is dropped again, as forgets during the connect
 * were not heard either.
 */
export class ForgetHearing {
  readonly #options: ForgetHearingOptions;
  #heard: { stop: () => void; until: number; timer: ReturnType<typeof setTimeout> | undefined } | undefined;

  constructor(options: ForgetHearingOptions) {
    this.#options = options;
  }

  /**
   * The key store is about to read keys: hear forgets from now on (a forget announced during the read
   * is then heard) for as long as the cache may keep what it finds.
   */
  keysHandedOut(): void {
    const { cacheMs } = this.#options;
    if (cacheMs <= 0 || this.#options.closed()) return;
    // With LISTEN down, a forget during or after this read would go unheard: an eviction now keeps the
    // cache from keeping what the read finds (PersonalData caches no live key fetched across one).
    if (this.#options.deaf()) this.#options.evict();
    const until = performance.now() + cacheMs;
    if (this.#heard !== undefined) {
      this.#heard.until = until;
      return;
    }
    const stop = this.#options.hear({
      heard: (kids) => this.#options.evict(kids.split(',')),
      missed: () => this.#options.evict(),
    });
    this.#heard = { stop, until, timer: undefined };
    this.#stopAt(cacheMs);
  }

  /**
   * The LISTEN connection is lost: drop every live key now, whether forgets are being heard or not (a
   * key cached by a read just before hearing stopped may still be kept).
   */
  lost(): void {
    if (this.#options.cacheMs > 0) this.#options.evict();
  }

  /** Stops hearing (the store is closing). */
  close(): void {
    const heard = this.#heard;
    this.#heard = undefined;
    clearTimeout(heard?.timer);
    heard?.stop();
  }

  /** Stops once no key handed out may still be cached: one timer, moved on as keys are handed out again. */
  #stopAt(delayMs: number): void {
    const heard = this.#heard;
    if (heard === undefined) return;
    heard.timer = setTimeout(() => {
      const left = heard.until - performance.now();
      if (left > 0) return this.#stopAt(left);
      this.#heard = undefined;
      heard.stop();
    }, delayMs);
    // Like the LISTEN connection's linger: nothing to keep the process up for.
    heard.timer.unref();
  }
}
