import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { silentLogger } from '../../src/core/logger.js';
import { isRedacted } from '../../src/core/personal/types.js';
import { MemoryCheckpointStore, memory } from '../../src/memory/index.js';
import { MemorySubjectKeyStore } from '../../src/memory/memory-subject-key-store.js';
import type { MemoryEventStore } from '../../src/memory/index.js';
import { Subscription } from '../../src/subscription/subscription.js';
import { personalDataConformance, subjectKeyConformance, waitUntil } from '../../src/testing/index.js';
import { customerRegistry, registered, secret, subjectId } from '../../src/testing/personal/context.js';
import type { CustomerEvent } from '../../src/testing/personal/context.js';

subjectKeyConformance({
  name: 'memory',
  create: async () => ({ keys: new MemorySubjectKeyStore(), close: async () => undefined }),
});

personalDataConformance({
  name: 'memory',
  create: async (registry) => {
    const backend = memory({ registry });
    return { store: backend.store, close: () => backend.close() };
  },
  tamper: async (store, position, data) => {
    (store as unknown as MemoryEventStore).corruptForTesting(position, { data });
  },
});

// The key cache a store behind a network uses (PostgreSQL's keyCacheMs), on memory: forget must leave
// no key of the subject in it.
personalDataConformance({
  name: 'memory, keys cached',
  create: async (registry) => {
    const backend = memory({ registry, keyCacheMs: 60_000 });
    return { store: backend.store, close: () => backend.close() };
  },
});

// The runners are above src/testing's layer, so a real Subscription is run here.
describe('personal data through a Subscription (memory)', () => {
  const cleanups: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it('delivers a forgotten subject\'s events redacted, before and after it catches up, and $subject.forgotten to a subscription naming it', async () => {
    const backend = memory({ registry: customerRegistry() });
    cleanups.push(() => backend.close());
    const store = backend.store;
    const [ava, ben] = [subjectId('ava'), subjectId('ben')];
    const [avaText, benText] = [secret('ava'), secret('ben')];
    await store.append(`customer-${ava}`, [registered(ava, avaText)]);
    await store.append(`customer-${ben}`, [registered(ben, benText)]);

    const live: Array<{ type: string; data: Record<string, unknown> }> = [];
    const running = new Subscription<CustomerEvent>({
      name: 'live',
      store,
      checkpoints: new MemoryCheckpointStore(),
      leaderLock: false,
      logger: silentLogger,
      pollIntervalMs: 20,
      handler: (event) => void live.push(event as never),
    });
    cleanups.push(() => running.stop());
    await running.start();
    await waitUntil(() => live.length === 2, { message: 'the live subscription to deliver the first two events' });
    assert.equal(live[0]?.data.email, `${avaText}@example.com`, 'before forget: plaintext');

    await store.forget(ava);
    await store.append(`customer-${ava}`, [{ type: 'PlanChanged', data: { customerId: ava, plan: 'gone' } }]);
    await store.append(`customer-${ben}`, [registered(ben, `${benText}-2`)]);
    await waitUntil(() => live.length === 4, { message: 'the live subscription to deliver the events after forget' });
    assert.deepEqual(live.map((event) => event.type), ['CustomerRegistered', 'CustomerRegistered', 'PlanChanged', 'CustomerRegistered'], 'no $subject.forgotten for an unfiltered subscription');
    assert.equal(running.state === 'failed', false);

    const replayed: Array<{ type: string; data: Record<string, unknown> }> = [];
    const replay = new Subscription<CustomerEvent>({
      name: 'replay',
      store,
      checkpoints: new MemoryCheckpointStore(),
      leaderLock: false,
      logger: silentLogger,
      pollIntervalMs: 20,
      types: ['CustomerRegistered', '$subject.forgotten' as never],
      handler: (event) => void replayed.push(event as never),
    });
    cleanups.push(() => replay.stop());
    await replay.start();
    await waitUntil(() => replayed.length === 4, { message: 'the replaying subscription to deliver every event' });
    assert.deepEqual(replayed.map((event) => event.type), ['CustomerRegistered', 'CustomerRegistered', '$subject.forgotten', 'CustomerRegistered']);
    assert.ok(isRedacted(replayed[0]?.data.email), 'replayed after forget: redacted');
    assert.equal(replayed[0]?.data.customerId, ava);
    assert.equal(replayed[1]?.data.email, `${benText}@example.com`);
    assert.deepEqual(replayed[2]?.data, { subject: ava, keysDestroyed: 1 });
    assert.ok(!JSON.stringify(replayed).includes(avaText), 'no plaintext of the forgotten subject reaches the handler');
    await replay.stop();
    assert.equal((await replay.status()).error, undefined, 'the subscription stopped without an error');
  });
});
