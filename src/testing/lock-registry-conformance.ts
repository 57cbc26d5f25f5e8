import { afterEach, describe, it } from 'node:test';
import type { AcquireOptions, Lease, LockRegistry } from '../core/lock.js';
import { contentionTests } from './lock-registry/contention.js';
import type { LockRegistryConformanceHarness, LockSuite, LockTestContext } from './lock-registry/context.js';
import { endingTests } from './lock-registry/ending.js';
import { exclusionTests } from './lock-registry/exclusion.js';
import { inputTests } from './lock-registry/input.js';
import { waitingTests } from './lock-registry/waiting.js';
import { waitUntil } from './wait.js';

export type { LockRegistryBackend, LockRegistryConformanceHarness } from './lock-registry/context.js';

/**
 * Registers the LockRegistry conformance tests (node:test `describe`/`it`) for one adapter. Every
 * registry in eskit runs it, and so can third-party ones:
 *
 * ```ts
 * // test/my-lock-registry.test.ts, run with `node --import tsx --test`
 * import { lockRegistryConformance } from 'eskit/testing';
 *
 * lockRegistryConformance<MyLockRegistry>({
 *   name: 'my-adapter',
 *   create: async () => {
 *     const database = await freshDatabase();
 *     return {
 *       // A new node on the same database each time: short polls keep the suite fast.
 *       registry: () => new MyLockRegistry({ url: database.url, pollIntervalMs: 20 }),
 *       // Optional: lose the lease as a crash or a timeout would (kill its session, expire its row).
 *       loseLease: (registry, lease) => database.killSessionOf(registry),
 *       close: () => database.drop(),
 *     };
 *   },
 * });
 * ```
 *
 * What it checks: one holder at a time per name; fencing tokens that grow with every new holder
 * (across registries, releases and restarts); `onWaiting` once per acquire that waits, and a try-lock
 * through it; abort (before, while waiting, from `onWaiting`) rejects with the signal's reason and
 * takes nothing; a released lock is free at once; two registries racing for one name; many names at
 * once; release twice; close() ends leases, fails waiters, refuses new acquires and is safe twice;
 * callbacks that release, close or acquire again from inside the registry's own calls; a lost lease's
 * signal; an empty name refused with ESKIT_INVALID_ARGUMENT. After each test the suite closes every
 * registry it got from `registry()`, then calls the backend's `close()`. Tests run one after another.
 */
export function lockRegistryConformance<R extends LockRegistry>(harness: LockRegistryConformanceHarness<R>): void {
  const testTimeoutMs = harness.testTimeoutMs ?? 30_000;
  const waitTimeoutMs = harness.waitTimeoutMs ?? 10_000;

  const cleanups: Array<() => Promise<void>> = [];

  const test = (name: string, fn: (ctx: LockTestContext<R>) => Promise<void>): void => {
    it(name, { timeout: testTimeoutMs }, async (t) => {
      // An adapter with nothing of its own pending (in-process) would let the event loop empty while an
      // acquire hangs: node:test would then cancel every test left instead of failing this one in time.
      // Cleared after the test even when it timed out (its function then never returns).
      const keepAlive = setInterval(() => undefined, 60_000);
      const backend = await harness.create().catch((error: unknown) => {
        clearInterval(keepAlive);
        throw error;
      });
      const registries = new Set<R>();
      cleanups.push(async () => {
        clearInterval(keepAlive);
        try {
          for (const registry of [...registries].reverse()) await registry.close();
        } finally {
          await backend.close();
        }
      });
      await fn({
        backend,
        t,
        async registry() {
          const registry = await backend.registry();
          registries.add(registry);
          return registry;
        },
      });
    });
  };

  /** An acquire that may wait, but not for good: a lock never freed fails the test in time. */
  const acquireSoon = (registry: LockRegistry, name: string, options: AcquireOptions = {}): Promise<Lease> =>
    registry.acquire(name, { ...options, signal: AbortSignal.any([AbortSignal.timeout(waitTimeoutMs), ...(options.signal ? [options.signal] : [])]) });

  const until = <T>(condition: () => T, message: string): Promise<NonNullable<T>> => waitUntil(condition, { timeoutMs: waitTimeoutMs, message });
  const suite: LockSuite<R> = { harness, test, acquireSoon, until };

  describe(`LockRegistry conformance: ${harness.name}`, () => {
    // After a failed or timed-out test as well: what it opened must not keep the process alive.
    afterEach(async () => {
      for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    }, { timeout: testTimeoutMs });

    exclusionTests(suite);
    waitingTests(suite);
    contentionTests(suite);
    endingTests(suite);
    inputTests(suite);
  });
}
