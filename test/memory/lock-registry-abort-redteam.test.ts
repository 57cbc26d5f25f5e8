/**
 * Red-team tests of MemoryLockRegistry: state changed from inside a callback the registry runs
 * (onWaiting, a lease's abort listeners), then read as if unchanged. Three found bugs, fixed since:
 * onWaiting ran before the waiter was queued and listening, so an abort, a release or a close() from
 * inside it was never heard and the acquire stayed pending for good (or was granted despite the abort).
 * The per-test timeout is what fails a test whose acquire never settles.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import type { Lease } from '../../src/core/lock.js';
import { MemoryLockRegistry } from '../../src/memory/index.js';

const lockUnavailable = (error: unknown): boolean => isEskitError(error, ErrorCode.LockUnavailable);

describe('MemoryLockRegistry red team: callbacks that change the state', () => {
  it('a signal aborted from onWaiting rejects the acquire at once, and the aborted waiter is never granted', { timeout: 2_000 }, async () => {
    const locks = new MemoryLockRegistry();
    const held = await locks.acquire('x');
    const controller = new AbortController();
    const reason = new Error('gave up');
    await assert.rejects(
      locks.acquire('x', { signal: controller.signal, onWaiting: () => controller.abort(reason) }),
      (error) => error === reason,
    );
    await held.release();
    assert.equal(locks.holderToken('x'), undefined, 'the lock is free: no lease went to the aborted acquire');
    assert.equal((await locks.acquire('x')).fencingToken, 2);
  });

  it('a holder released from onWaiting hands the lock to that waiter', { timeout: 2_000 }, async () => {
    const locks = new MemoryLockRegistry();
    const held = await locks.acquire('x');
    const lease = await locks.acquire('x', { onWaiting: () => void held.release() });
    assert.equal(lease.fencingToken, 2);
    assert.equal(locks.holderToken('x'), 2);
    assert.equal(held.signal.aborted, true);
  });

  it('close() from onWaiting fails that acquire with ESKIT_LOCK_UNAVAILABLE', { timeout: 2_000 }, async () => {
    const locks = new MemoryLockRegistry();
    const held = await locks.acquire('x');
    await assert.rejects(locks.acquire('x', { onWaiting: () => void locks.close() }), lockUnavailable);
    assert.equal(held.signal.aborted, true);
  });

  it('an onWaiting that throws fails its acquire and leaves no waiter behind', async () => {
    const locks = new MemoryLockRegistry();
    const held = await locks.acquire('x');
    const boom = new Error('onWaiting failed');
    await assert.rejects(
      locks.acquire('x', {
        onWaiting: () => {
          throw boom;
        },
      }),
      (error) => error === boom,
    );
    await held.release();
    assert.equal(locks.holderToken('x'), undefined, 'the failed acquire was not granted the lock');
  });

  it('a lease\'s abort listener that acquires again while close() ends the lease is refused', async () => {
    const locks = new MemoryLockRegistry();
    const lease = await locks.acquire('x');
    let again: Promise<Lease> | undefined;
    lease.signal.addEventListener('abort', () => {
      again = locks.acquire('x');
    });
    await locks.close();
    assert.ok(again, 'the listener ran');
    await assert.rejects(again, lockUnavailable);
    assert.equal(locks.holderToken('x'), undefined);
  });
});
