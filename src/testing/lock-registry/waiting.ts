import assert from 'node:assert/strict';
import { ErrorCode } from '../../core/errors.js';
import type { LockRegistry } from '../../core/lock.js';
import { isCode, pending, promiseOf, tryAcquire } from './context.js';
import type { LockSuite } from './context.js';

/** A waiting acquire: aborts, and callbacks (onWaiting) that throw, release or close. */
export function waitingTests<R extends LockRegistry>(suite: LockSuite<R>): void {
  const { test, acquireSoon, until } = suite;
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
}
