import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { silentLogger } from '../../src/core/logger.js';
import { waitUntil } from '../../src/testing/wait.js';
import { ChangeFeed } from '../../src/view/index.js';
import type { ViewChange } from '../../src/view/index.js';

const feed = (options: { debounceMs?: number; maxKeys?: number } = {}) => new ChangeFeed({ view: 'v', debounceMs: 0, logger: silentLogger, ...options });

describe('ChangeFeed', () => {
  it('debounces: changes published together arrive as one, with the keys merged and the highest position', async () => {
    const changes = feed({ debounceMs: 5 });
    const received: ViewChange[] = [];
    changes.subscribe((change) => void received.push(change));
    changes.publish(['a', 'b'], 3);
    changes.publish(['b', 'c'], 5);
    await waitUntil(() => received.length === 1, { message: 'one change' });
    assert.deepEqual(received[0], { view: 'v', keys: ['a', 'b', 'c'], position: 5 });
    changes.publish(undefined, 6);
    changes.publish(['d'], 7);
    await waitUntil(() => received.length === 2, { message: 'a second change' });
    assert.deepEqual(received[1], { view: 'v', keys: undefined, position: 7 }, 'unknown keys mean everything');
  });

  it('more keys than maxKeys become "everything changed"', async () => {
    const changes = feed({ maxKeys: 3 });
    const received: ViewChange[] = [];
    changes.subscribe((change) => void received.push(change));
    changes.publish(['a', 'b', 'c', 'd'], 1);
    await waitUntil(() => received.length === 1, { message: 'a change' });
    assert.equal(received[0]?.keys, undefined);
  });

  it('fans out to 1,000 listeners while an iterator that is never read holds one capped change', async () => {
    const changes = feed({ maxKeys: 20 });
    const counts = new Array<number>(1000).fill(0);
    const unsubscribes = counts.map((_, index) => changes.subscribe((change) => void (counts[index] = (counts[index] ?? 0) + (change.keys?.length ?? 0))));
    const stuck = changes.subscribe();
    assert.equal(changes.listenerCount, 1001);
    for (let round = 0; round < 30; round++) {
      changes.publish([`k${round}`], round + 1);
      await waitUntil(() => counts.every((count) => count === round + 1), { message: `round ${round} delivered to everyone` });
    }
    // Thirty single-key changes were merged into one pending change for the stuck iterator; beyond
    // maxKeys (20) it says "everything", so what it holds stays bounded however long it sleeps.
    const pending = await stuck.next();
    assert.deepEqual(pending, { done: false, value: { view: 'v', keys: undefined, position: 30 } });
    // Nothing more is pending: the next read waits for the next change.
    const next = stuck.next();
    changes.publish(['late'], 31);
    assert.deepEqual(await next, { done: false, value: { view: 'v', keys: ['late'], position: 31 } });
    for (const unsubscribe of unsubscribes) unsubscribe();
    await stuck.return?.();
    assert.equal(changes.listenerCount, 0);
  });

  it('keeps at most one call in flight per async listener, merging what arrives meanwhile', async () => {
    const changes = feed();
    const calls: ViewChange[] = [];
    let finish: () => void = () => undefined;
    changes.subscribe((change) => {
      calls.push(change);
      return new Promise<void>((resolve) => (finish = resolve));
    });
    const fast: ViewChange[] = [];
    changes.subscribe((change) => void fast.push(change));
    changes.publish(['a'], 1);
    await waitUntil(() => calls.length === 1, { message: 'the first call' });
    changes.publish(['b'], 2);
    await waitUntil(() => fast.length === 2, { message: 'the fast listener to get the second change' });
    changes.publish(['c'], 3);
    await waitUntil(() => fast.length === 3, { message: 'the fast listener to get the third change' });
    assert.equal(calls.length, 1, 'the slow listener is not called again while its call runs');
    finish();
    await waitUntil(() => calls.length === 2, { message: 'the merged call' });
    assert.deepEqual(calls[1], { view: 'v', keys: ['b', 'c'], position: 3 });
  });

  it('a throwing or rejecting listener stays subscribed and does not disturb the others', async () => {
    const changes = feed();
    let thrown = 0;
    let rejected = 0;
    const good: ViewChange[] = [];
    changes.subscribe(() => {
      thrown += 1;
      throw new Error('listener bug');
    });
    changes.subscribe(async () => {
      rejected += 1;
      throw new Error('async listener bug');
    });
    changes.subscribe((change) => void good.push(change));
    changes.publish(['a'], 1);
    await waitUntil(() => good.length === 1, { message: 'the good listener' });
    changes.publish(['b'], 2);
    await waitUntil(() => good.length === 2 && thrown === 2 && rejected === 2, { message: 'everyone called twice' });
  });

  it('an iterator ends when its signal aborts or the loop breaks, and unsubscribes', async () => {
    const changes = feed();
    const activity: boolean[] = [];
    changes.onActivity((active) => activity.push(active));
    const controller = new AbortController();
    const iterator = changes.subscribe({ signal: controller.signal });
    const waiting = iterator.next();
    controller.abort();
    assert.deepEqual(await waiting, { done: true, value: undefined });
    assert.equal(changes.listenerCount, 0);

    const seen: ViewChange[] = [];
    const loop = (async () => {
      for await (const change of changes.subscribe()) {
        seen.push(change);
        if (change.position === 2) break;
      }
    })();
    await waitUntil(() => changes.listenerCount === 1, { message: 'the loop to subscribe' });
    changes.publish(['a'], 1);
    await waitUntil(() => seen.length === 1, { message: 'the first change' });
    changes.publish(['b'], 2);
    await loop;
    assert.deepEqual(
      seen.map((change) => change.keys),
      [['a'], ['b']],
    );
    assert.equal(changes.listenerCount, 0);
    assert.deepEqual(activity, [true, false, true, false]);
    // Subscribing with an aborted signal gives an iterator that is already done.
    assert.deepEqual(await changes.subscribe({ signal: AbortSignal.abort() }).next(), { done: true, value: undefined });
  });
});
