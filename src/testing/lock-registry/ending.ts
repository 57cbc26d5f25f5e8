import assert from 'node:assert/strict';
import { ErrorCode } from '../../core/errors.js';
import type { Lease, LockRegistry } from '../../core/lock.js';
import { isCode, pending, promiseOf, tryAcquire } from './context.js';
import type { LockSuite } from './context.js';

/** How leases end: release (twice, late), close(), and a lease lost to the backend. */
export function endingTests<R extends LockRegistry>(suite: LockSuite<R>): void {
  const { test, acquireSoon, until } = suite;
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
}
