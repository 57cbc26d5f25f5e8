import assert from 'node:assert/strict';
import type { LockRegistry } from '../../core/lock.js';
import { pending, tryAcquire } from './context.js';
import type { LockSuite } from './context.js';

/** One holder at a time per name, onWaiting, and fencing tokens that grow with every holder. */
export function exclusionTests<R extends LockRegistry>(suite: LockSuite<R>): void {
  const { test, acquireSoon, until, harness } = suite;
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
}
