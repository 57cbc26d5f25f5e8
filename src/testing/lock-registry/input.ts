import assert from 'node:assert/strict';
import { ErrorCode } from '../../core/errors.js';
import type { LockRegistry } from '../../core/lock.js';
import { isCode, promiseOf, tryAcquire } from './context.js';
import type { LockSuite } from './context.js';

/** Bad input. */
export function inputTests<R extends LockRegistry>(suite: LockSuite<R>): void {
  const { test } = suite;
  test('bad input: a lock name that is empty or not a string is refused with ESKIT_INVALID_ARGUMENT, and nothing is taken', async ({ registry }) => {
    const a = await registry();
    for (const name of ['', undefined, 42, null]) {
      await assert.rejects(promiseOf('acquire', () => a.acquire(name as string)), isCode(ErrorCode.InvalidArgument), `name ${JSON.stringify(name)}`);
    }
    const lease = await tryAcquire(a, 'ok');
    assert.ok(lease, 'the registry still works');
  });
}
