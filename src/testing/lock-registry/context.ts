import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { isEskitError } from '../../core/errors.js';
import type { AcquireOptions, Lease, LockRegistry } from '../../core/lock.js';

/** One backend (a database file, a schema, an in-process table) for one test. */
export interface LockRegistryBackend<R extends LockRegistry = LockRegistry> {
  /**
   * A registry on this backend: a node. Registries of one backend compete for the same locks, as
   * processes sharing a database do. Return a new one (its own connection) on every call if the adapter
   * can. An in-process adapter whose nodes all share one instance may return that instance every time
   * (and set `sharedInstance` on the harness).
   */
  registry(): R | Promise<R>;
  /**
   * Optional: takes `lease` away from `registry` behind its back, as the backend does when a lease is
   * lost (it expired, the session was killed), without calling the registry or the lease. The registry
   * must notice on its own and abort `lease.signal`. Without this hook the loss test is skipped.
   */
  loseLease?(registry: R, lease: Lease): Promise<void>;
  /** Releases the backend (drops the schema, deletes the file). Called after every registry is closed. */
  close(): Promise<void>;
}

/** What an adapter hands `lockRegistryConformance`. */
export interface LockRegistryConformanceHarness<R extends LockRegistry = LockRegistry> {
  /** Shown in test names, e.g. 'memory', 'sqlite', 'postgres'. */
  name: string;
  /** A fresh, empty backend for one test; called once per test. */
  create(): Promise<LockRegistryBackend<R>>;
  /** Fails a test that runs longer than this (a hung acquire must fail, not stall CI). Default 30 000. */
  testTimeoutMs?: number;
  /**
   * `registry()` returns one shared instance (an in-process adapter): the check that tokens keep
   * growing for a registry made after every other one closed (a restart) does not apply, and is not run.
   */
  sharedInstance?: boolean;
  /**
   * The longest the suite waits for something a registry does on its own: notice a lost lease, hand a
   * free lock to a waiter. Default 10 000; raise it for an adapter that polls slowly.
   */
  waitTimeoutMs?: number;
}

export const isCode = (code: string) => (error: unknown): boolean => {
  assert.ok(isEskitError(error, code), `expected ${code}, got ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`);
  return true;
};

/** The promise `call` returns; fails the test if it throws instead (callers chain `.catch` on it). */
export function promiseOf<T>(what: string, call: () => Promise<T>): Promise<T> {
  try {
    return call();
  } catch (error) {
    assert.fail(`${what} threw synchronously (${String(error)}); it must return a rejected promise`);
  }
}

/** A pending acquire whose outcome the test can look at without awaiting it. */
export function pending(promise: Promise<Lease>): { state: { lease?: Lease; error?: unknown; settled: boolean }; settled: Promise<Lease> } {
  const state: { lease?: Lease; error?: unknown; settled: boolean } = { settled: false };
  const settled = promise.then(
    (lease) => {
      state.lease = lease;
      state.settled = true;
      return lease;
    },
    (error: unknown) => {
      state.error = error;
      state.settled = true;
      throw error;
    },
  );
  settled.catch(() => undefined);
  return { state, settled };
}

/** One attempt that does not wait: the lease, or undefined when the lock is held (by anyone). */
export async function tryAcquire(registry: LockRegistry, name: string): Promise<Lease | undefined> {
  const controller = new AbortController();
  const refused = new Error('held: this try does not wait');
  try {
    return await registry.acquire(name, { signal: controller.signal, onWaiting: () => controller.abort(refused) });
  } catch (error) {
    if (error === refused) return undefined;
    throw error;
  }
}

/** What one test gets: the backend, and registries of it that the suite closes after the test. */
export interface LockTestContext<R extends LockRegistry> {
  backend: LockRegistryBackend<R>;
  /** A registry of this test's backend, closed after the test. */
  registry(): Promise<R>;
  t: TestContext;
}

/** What each group of tests registers with: the harness, and helpers bounded by its timeouts. */
export interface LockSuite<R extends LockRegistry> {
  harness: LockRegistryConformanceHarness<R>;
  /** Registers one test (node:test `it`) on a fresh backend. */
  test(name: string, fn: (ctx: LockTestContext<R>) => Promise<void>): void;
  /** An acquire that may wait, but not for good: a lock never freed fails the test in time. */
  acquireSoon(registry: LockRegistry, name: string, options?: AcquireOptions): Promise<Lease>;
  /** Waits for `condition`, failing the test after the harness's wait timeout. */
  until<T>(condition: () => T, message: string): Promise<NonNullable<T>>;
}
