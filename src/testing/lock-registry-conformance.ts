import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import { ErrorCode, isEskitError } from '../core/errors.js';
import type { AcquireOptions, Lease, LockRegistry } from '../core/lock.js';
import { waitUntil } from './wait.js';

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

const isCode = (code: string) => (error: unknown): boolean => {
  assert.ok(isEskitError(error, code), `expected ${code}, got ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`);
  return true;
};

/** The promise `call` returns; fails the test if it throws instead (callers chain `.catch` on it). */
function promiseOf<T>(what: string, call: () => Promise<T>): Promise<T> {
  try {
    return call();
  } catch (error) {
    assert.fail(`${what} threw synchronously (${String(error)}); it must return a rejected promise`);
  }
}

/** A pending acquire whose outcome the test can look at without awaiting it. */
function pending(promise: Promise<Lease>): { state: { lease?: Lease; error?: unknown; settled: boolean }; settled: Promise<Lease> } {
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
async function tryAcquire(registry: LockRegistry, name: string): Promise<Lease | undefined> {
  const controller = new AbortController();
  const refused = new Error('held: this try does not wait');
  try {
    return await registry.acquire(name, { signal: controller.signal, onWaiting: () => controller.abort(refused) });
  } catch (error) {
    if (error === refused) return undefined;
    throw error;
  }
}

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

  interface Ctx {
    backend: LockRegistryBackend<R>;
    /** A registry of this test's backend, closed after the test. */
    registry(): Promise<R>;
    t: TestContext;
  }

  const cleanups: Array<() => Promise<void>> = [];

  const test = (name: string, fn: (ctx: Ctx) => Promise<void>): void => {
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

  describe(`LockRegistry conformance: ${harness.name}`, () => {
    // After a failed or timed-out test as well: what it opened must not keep the process alive.
    afterEach(async () => {
      for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    }, { timeout: testTimeoutMs });

    test('acquire grants a lease: the name asked for, a positive integer fencing token and a live signal; release aborts the signal', async ({ registry }) => {
      const a = await registry();
      const lease = await a.acquire('job');
      assert.equal(lease.name, 'job');
      assert.ok(Number.isSafeInteger(lease.fencingToken) && lease.fencingToken > 0, `fencing token ${lease.fencingToken} is a positive integer`);
      assert.equal(lease.signal.aborted, false);
      await lease.release();
      assert.equal(lease.signal.aborted, true, 'a released lease signals its holder');
      assert.ok(lease.signal.reason instanceof Error, 'with an Error saying why');
    });

    test('mutual exclusion: while one registry holds a lock nobody else gets it; the waiter gets it on release; other names are independent', async ({ registry }) => {
      const [a, b, c] = [await registry(), await registry(), await registry()];
      const lease = await a.acquire('job');
      const other = await a.acquire('other');
      let waited = 0;
      const waiting = pending(acquireSoon(b, 'job', { onWaiting: () => void waited++ }));
      await until(() => waited === 1 || waiting.state.settled, 'the second acquirer to wait');
      assert.equal(waiting.state.lease, undefined, 'no second holder');
      assert.equal(await tryAcquire(c, 'job'), undefined, 'a third registry is refused');
      assert.equal(await tryAcquire(a, 'job'), undefined, 'so is the holder\'s registry, for a second lease');
      assert.equal(waiting.state.lease, undefined, 'still no second holder');
      await lease.release();
      const next = await waiting.settled;
      assert.equal(lease.signal.aborted, true);
      assert.ok(next.fencingToken > lease.fencingToken, `the new holder's token ${next.fencingToken} is above ${lease.fencingToken}`);
      assert.equal(next.signal.aborted, false);
      assert.equal(await tryAcquire(c, 'job'), undefined, 'the new holder has it now');
      assert.equal(other.signal.aborted, false, 'a lease on another name is untouched');
      const free = await tryAcquire(c, 'free');
      assert.ok(free, 'a name nobody holds is free to anyone');
    });

    test('onWaiting is called once per acquire that waits, whether another registry or the same one holds the lock, and never when it is free', async ({ registry }) => {
      const [a, b] = [await registry(), await registry()];
      let free = 0;
      const lease = await a.acquire('x', { onWaiting: () => void free++ });
      assert.equal(free, 0, 'not called when the lock is free');
      let byB = 0;
      let byA = 0;
      const fromB = pending(acquireSoon(b, 'x', { onWaiting: () => void byB++ }));
      const fromA = pending(acquireSoon(a, 'x', { onWaiting: () => void byA++ }));
      await until(() => byB === 1 && byA === 1, 'both acquires to wait');
      // The waiters go on trying meanwhile (polls, wake-ups): none of that is a new denial.
      for (let i = 0; i < 3; i++) assert.equal(await tryAcquire(b, 'x'), undefined);
      await lease.release();
      const first = await Promise.race([fromA.settled, fromB.settled]);
      await first.release();
      const second = await (first === fromA.state.lease ? fromB.settled : fromA.settled);
      assert.ok(first.fencingToken > lease.fencingToken && second.fencingToken > first.fencingToken, 'each later holder has a larger token');
      assert.deepEqual([byA, byB], [1, 1], 'onWaiting was called once per acquire');
    });

    test('fencing tokens grow with every new holder: release and reacquire, from one registry and across registries', async ({ registry }) => {
      const [a, b] = [await registry(), await registry()];
      const tokens: number[] = [];
      for (const locks of [a, a, b, a, b, b]) {
        const lease = await locks.acquire('t');
        tokens.push(lease.fencingToken);
        await lease.release();
      }
      for (let i = 1; i < tokens.length; i++) {
        assert.ok((tokens[i] as number) > (tokens[i - 1] as number), `tokens grow with every holder: ${tokens.join(', ')}`);
      }
    });

    if (!harness.sharedInstance) test('fencing tokens keep growing for a registry made after every other one closed (a restart)', async ({ registry }) => {
      const a = await registry();
      let last = 0;
      for (let i = 0; i < 2; i++) {
        const lease = await a.acquire('t');
        last = lease.fencingToken;
        await lease.release();
      }
      const held = await a.acquire('t');
      last = held.fencingToken;
      await a.close();
      const later = await registry();
      assert.notEqual(later, a, 'registry() returned the instance that was closed: set sharedInstance on the harness');
      const lease = await later.acquire('t');
      assert.ok(lease.fencingToken > last, `token ${lease.fencingToken} after the restart is above ${last}`);
    });

    test('a released lock is free at once: the next acquire from another registry or from the same one does not wait, and gets a larger token', async ({ registry }) => {
      const [a, b] = [await registry(), await registry()];
      const first = await a.acquire('x');
      await first.release();
      const byOther = await tryAcquire(b, 'x');
      assert.ok(byOther, 'another registry got it without waiting');
      assert.ok(byOther.fencingToken > first.fencingToken);
      await byOther.release();
      const bySame = await tryAcquire(b, 'x');
      assert.ok(bySame, 'the same registry got it again without waiting');
      assert.ok(bySame.fencingToken > byOther.fencingToken);
    });

    test('abort: a waiting acquire rejects with the signal\'s reason and never holds the lock; so does one aborted before it starts, or from onWaiting (a try-lock)', async ({ registry }) => {
      const [a, b, c] = [await registry(), await registry(), await registry()];
      const lease = await a.acquire('x');
      const controller = new AbortController();
      let waiting = false;
      const waiter = pending(b.acquire('x', { signal: controller.signal, onWaiting: () => void (waiting = true) }));
      await until(() => waiting, 'the acquire to wait');
      const reason = new Error('gave up');
      controller.abort(reason);
      await assert.rejects(waiter.settled, (error) => error === reason, 'rejects with the signal\'s reason');
      const impatient = new AbortController();
      await assert.rejects(
        b.acquire('x', { signal: impatient.signal, onWaiting: () => impatient.abort(reason) }),
        (error) => error === reason,
        'a signal aborted from onWaiting is heard too',
      );
      await lease.release();
      // Bounded: an aborted acquire that took the lock anyway would hold it for good.
      const taken = await acquireSoon(c, 'x');
      assert.ok(taken.fencingToken > lease.fencingToken);
      await taken.release();
      await assert.rejects(promiseOf('acquire', () => b.acquire('x', { signal: AbortSignal.abort(reason) })), (error) => error === reason, 'an aborted signal rejects at once, even for a free lock');
      const again = await tryAcquire(c, 'x');
      assert.ok(again, 'the acquire with an aborted signal took nothing');
      await again.release();
      const late = new AbortController();
      const kept = await b.acquire('x', { signal: late.signal });
      late.abort(reason);
      assert.equal(kept.signal.aborted, false, 'aborting an acquire\'s signal after it was granted leaves the lease alone');
      assert.equal(await tryAcquire(c, 'x'), undefined, 'which still holds the lock');
    });

    test('an onWaiting that throws rejects its acquire with what it threw and leaves nothing waiting to take the lock later', async ({ registry }) => {
      const [a, b, c] = [await registry(), await registry(), await registry()];
      const held = await a.acquire('x');
      const boom = new Error('onWaiting failed');
      await assert.rejects(
        b.acquire('x', {
          onWaiting: () => {
            throw boom;
          },
        }),
        (error) => error === boom,
      );
      await held.release();
      // A waiter left behind would take the lock and keep it: this one would then wait in vain.
      const lease = await acquireSoon(c, 'x');
      assert.ok(lease.fencingToken > held.fencingToken);
    });

    test('a release made from inside onWaiting hands the lock to that waiter', async ({ registry }) => {
      const [a, b] = [await registry(), await registry()];
      const held = await a.acquire('x');
      const lease = await acquireSoon(b, 'x', { onWaiting: () => void held.release() });
      assert.equal(held.signal.aborted, true);
      assert.ok(lease.fencingToken > held.fencingToken);
      assert.equal(lease.signal.aborted, false);
    });

    test('close() called from inside onWaiting fails that acquire with ESKIT_LOCK_UNAVAILABLE', async ({ registry }) => {
      const [a, b] = [await registry(), await registry()];
      const held = await a.acquire('x');
      await assert.rejects(acquireSoon(b, 'x', { onWaiting: () => void b.close() }), isCode(ErrorCode.LockUnavailable));
      // One shared instance: closing it ends its leases; otherwise another node's lease goes on.
      assert.equal(held.signal.aborted, a === b, a === b ? 'the closed registry\'s lease ended' : 'the other registry\'s lease is untouched');
    });

    test('two registries racing: many concurrent acquires of one name, never two holders at once, each token larger than the one before in grant order', async ({ registry }) => {
      const [a, b] = [await registry(), await registry()];
      const PER_REGISTRY = 8;
      let holding = 0;
      let most = 0;
      const granted: number[] = [];
      const cycle = async (locks: LockRegistry): Promise<void> => {
        const lease = await acquireSoon(locks, 'race');
        holding += 1;
        most = Math.max(most, holding);
        granted.push(lease.fencingToken);
        // Hold across a turn of the event loop, so that a second holder would overlap this one.
        await new Promise((resolve) => setImmediate(resolve));
        holding -= 1;
        await lease.release();
      };
      await Promise.all(Array.from({ length: PER_REGISTRY }, () => [cycle(a), cycle(b)]).flat());
      assert.equal(most, 1, 'one holder at a time');
      assert.equal(granted.length, 2 * PER_REGISTRY);
      assert.equal(new Set(granted).size, granted.length, `every token distinct: ${granted.join(', ')}`);
      for (let i = 1; i < granted.length; i++) {
        assert.ok((granted[i] as number) > (granted[i - 1] as number), `tokens grow in grant order: ${granted.join(', ')}`);
      }
    });

    test('many names at once: each is its own lock with its own token, granted together and handed over together', async ({ registry }) => {
      const [a, b] = [await registry(), await registry()];
      const names = Array.from({ length: 10 }, (_, i) => `lock-${i}`);
      const held = await Promise.all(names.map((name) => acquireSoon(a, name)));
      assert.deepEqual(held.map((lease) => lease.name), names);
      let denied = 0;
      const waiters = names.map((name) => pending(acquireSoon(b, name, { onWaiting: () => void denied++ })));
      await until(() => denied === names.length, 'every name to be denied to the other registry');
      await Promise.all(held.slice(0, 5).map((lease) => lease.release()));
      const firstHalf = await Promise.all(waiters.slice(0, 5).map((waiter) => waiter.settled));
      assert.ok(waiters.slice(5).every((waiter) => waiter.state.lease === undefined), 'names still held stay held');
      await Promise.all(held.slice(5).map((lease) => lease.release()));
      const secondHalf = await Promise.all(waiters.slice(5).map((waiter) => waiter.settled));
      [...firstHalf, ...secondHalf].forEach((lease, i) => {
        assert.equal(lease.name, names[i]);
        assert.ok(lease.fencingToken > (held[i] as Lease).fencingToken, `${lease.name}: the new holder's token is above the old one's`);
      });
    });

    test('release is safe twice, also at once, and a late release never ends a later holder\'s lease', async ({ registry }) => {
      const [a, b, c] = [await registry(), await registry(), await registry()];
      const lease = await a.acquire('x');
      await Promise.all([lease.release(), lease.release()]);
      await lease.release();
      const next = await acquireSoon(b, 'x');
      await lease.release();
      assert.equal(next.signal.aborted, false, 'the later holder\'s lease goes on');
      assert.equal(await tryAcquire(c, 'x'), undefined, 'and it still holds the lock');
      await next.release();
      await next.release();
    });

    test('close() ends every lease it holds (their signals fire), fails its waiting acquires and refuses new ones with ESKIT_LOCK_UNAVAILABLE, and is safe twice; the locks are free at once', async ({ registry }) => {
      const a = await registry();
      const x = await a.acquire('x');
      const y = await a.acquire('y');
      let waiting = false;
      const waiter = pending(acquireSoon(a, 'x', { onWaiting: () => void (waiting = true) }));
      await until(() => waiting, 'an acquire of a lock the registry holds itself to wait');
      await Promise.all([a.close(), a.close()]);
      await a.close();
      assert.equal(x.signal.aborted, true, 'the lease on x ended');
      assert.equal(y.signal.aborted, true, 'the lease on y ended');
      assert.ok(x.signal.reason instanceof Error);
      await assert.rejects(waiter.settled, isCode(ErrorCode.LockUnavailable));
      await assert.rejects(promiseOf('acquire after close()', () => a.acquire('z')), isCode(ErrorCode.LockUnavailable));
      await x.release();
      const b = await registry();
      if (b !== a) {
        const takenX = await tryAcquire(b, 'x');
        const takenY = await tryAcquire(b, 'y');
        assert.ok(takenX && takenY, 'another registry takes both locks without waiting');
        assert.ok(takenX.fencingToken > x.fencingToken && takenY.fencingToken > y.fencingToken);
      }
    });

    test('an abort listener of a lease that acquires again while close() ends the lease is refused with ESKIT_LOCK_UNAVAILABLE', async ({ registry }) => {
      const a = await registry();
      const lease = await a.acquire('x');
      let again: Promise<Lease> | undefined;
      lease.signal.addEventListener('abort', () => {
        again = a.acquire('x');
        again.catch(() => undefined);
      });
      await a.close();
      assert.ok(again, 'the listener ran');
      await assert.rejects(again, isCode(ErrorCode.LockUnavailable));
      const b = await registry();
      if (b !== a) {
        const taken = await tryAcquire(b, 'x');
        assert.ok(taken, 'the lock is free: nothing was granted after close()');
        assert.ok(taken.fencingToken > lease.fencingToken);
      }
    });

    for (const waiterIn of ['another registry', 'the same registry'] as const) {
      test(`a lease lost to the backend (loseLease) aborts its signal; a waiting acquire in ${waiterIn} takes over with a larger token; the lost lease's release is safe`, async ({ backend, registry, t }) => {
        const loseLease = backend.loseLease?.bind(backend);
        if (!loseLease) {
          t.skip('the harness has no loseLease hook');
          return;
        }
        const [a, b] = [await registry(), await registry()];
        const lease = await a.acquire('x');
        let waiting = false;
        const waiter = pending(acquireSoon(waiterIn === 'the same registry' ? a : b, 'x', { onWaiting: () => void (waiting = true) }));
        await until(() => waiting, 'an acquire to wait');
        await loseLease(a, lease);
        await until(() => lease.signal.aborted, 'the lost lease\'s signal');
        assert.ok(lease.signal.reason instanceof Error, 'aborted with an Error saying why');
        const next = await waiter.settled;
        assert.ok(next.fencingToken > lease.fencingToken, `the new holder's token ${next.fencingToken} is above ${lease.fencingToken}`);
        await lease.release();
        assert.equal(next.signal.aborted, false, 'releasing the lost lease leaves the new holder alone');
        assert.equal(await tryAcquire(waiterIn === 'the same registry' ? b : a, 'x'), undefined, 'which still holds the lock');
      });
    }

    test('bad input: a lock name that is empty or not a string is refused with ESKIT_INVALID_ARGUMENT, and nothing is taken', async ({ registry }) => {
      const a = await registry();
      for (const name of ['', undefined, 42, null]) {
        await assert.rejects(promiseOf('acquire', () => a.acquire(name as string)), isCode(ErrorCode.InvalidArgument), `name ${JSON.stringify(name)}`);
      }
      const lease = await tryAcquire(a, 'ok');
      assert.ok(lease, 'the registry still works');
    });
  });
}
