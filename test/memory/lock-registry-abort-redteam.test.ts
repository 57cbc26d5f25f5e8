/**
 * Red-team tests of MemoryLockRegistry: state changed from inside a callback the registry runs
 * (onWaiting, a lease's abort listeners), then read as if unchanged. Three found bugs, fixed since:
 * onWaiting ran before the waiter was queued and listening, so an abort, a release or a close() from
 * inside it was never heard and the acquire stayed pending for good (or was granted despite the abort).
 * Those regression tests now run for every registry in the LockRegistry conformance suite
 * (lock-registry-conformance.test.ts); what stays here looks at the registry's own state.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import type { Lease } from '../../src/core/lock.js';
import { MemoryLockRegistry } from '../../src/memory/index.js';

const lockUnavailable = (error: unknown): boolean => isEskitError(error, ErrorCode.LockUnavailable);

describe('MemoryLockRegistry red team: callbacks that change the state', () => {
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
