import assert from 'node:assert/strict';
import type { Lease, LockRegistry } from '../../core/lock.js';
import { pending } from './context.js';
import type { LockSuite } from './context.js';

/** Many acquires at once: of one name from two registries, and of many names. */
export function contentionTests<R extends LockRegistry>(suite: LockSuite<R>): void {
  const { test, acquireSoon, until } = suite;
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
}
