// Split stored events reach every kind of reader whole: a subscription (plain, batched, partitioned)
// gets every part and checkpoints past a stored event only once all its parts were handled; an
// automation keeps the items of two parts apart (completions are keyed by position and item id);
// a view folds every part; a redrive hands the trigger the decoded part the letter names.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { Automation } from '../../src/automation/index.js';
import type { Recorded } from '../../src/core/event.js';
import { silentLogger } from '../../src/core/logger.js';
import { EventRegistry } from '../../src/core/registry.js';
import { memory } from '../../src/memory/index.js';
import type { MemoryBackend } from '../../src/memory/index.js';
import { Subscription } from '../../src/subscription/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { MemoryView } from '../../src/view/index.js';

type ShopEvent = { type: 'OrderPlaced'; data: { orderId: string } } | { type: 'PaymentTaken'; data: { orderId: string; amount: number } };

/** Old code's registry: it still wrote CheckedOut. */
class OldCode extends EventRegistry<ShopEvent> {
  override encode(_type: string, data: unknown): unknown {
    return data;
  }
}

const definitions = { OrderPlaced: { renamedFrom: ['OrderCreated'] }, PaymentTaken: {} };
const splits = {
  CheckedOut: {
    into: ['OrderPlaced', 'PaymentTaken'] as Array<'OrderPlaced' | 'PaymentTaken'>,
    split: (data: unknown) => {
      const { orderId, amount } = data as { orderId: string; amount: number };
      return [
        { type: 'OrderPlaced' as const, data: { orderId } },
        { type: 'PaymentTaken' as const, data: { orderId, amount } },
      ];
    },
  },
};

let stops: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const stop of stops.reverse()) await stop();
  stops = [];
});

/** A backend holding two CheckedOut events (4 parts), a renamed one and a plain one. */
async function shop(): Promise<{ backend: MemoryBackend<ShopEvent>; head: number }> {
  const backend = memory<ShopEvent>({ registry: new OldCode(definitions, { splits }) });
  stops.push(() => backend.close());
  await backend.store.append('order-1', [{ type: 'CheckedOut', data: { orderId: 'a', amount: 1 } } as never]);
  await backend.store.append('order-2', [{ type: 'OrderCreated', data: { orderId: 'b' } } as never]);
  await backend.store.append('order-3', [{ type: 'CheckedOut', data: { orderId: 'c', amount: 3 } } as never]);
  const last = await backend.store.append('order-2', [{ type: 'PaymentTaken', data: { orderId: 'b', amount: 2 } }]);
  return { backend, head: last.position };
}

const label = (event: Recorded<ShopEvent>): string => `${event.position}:${event.type}:${event.data.orderId}`;
const EXPECTED = ['1:OrderPlaced:a', '1:PaymentTaken:a', '2:OrderPlaced:b', '3:OrderPlaced:c', '3:PaymentTaken:c', '4:PaymentTaken:b'];

describe('split stored events and the readers', () => {
  for (const [name, options] of [
    ['one at a time, batchSize 1', { batchSize: 1 }],
    ['batch handler, batchSize 1', { batchSize: 1, batch: true }],
    ['partitioned, batchSize 1', { batchSize: 1, partitions: 2 }],
  ] as const) {
    it(`a subscription (${name}) gets every part, in order, and checkpoints at the head`, async () => {
      const { backend, head } = await shop();
      const seen: string[] = [];
      const handle = (event: Recorded<ShopEvent>): void => void seen.push(label(event));
      const subscription = new Subscription<ShopEvent>({
        backend,
        name: 'all',
        logger: silentLogger,
        leaderLock: false,
        pollIntervalMs: 10,
        batchSize: options.batchSize,
        ...('partitions' in options ? { partitions: options.partitions, partitionKey: () => 'one' } : {}),
        ...('batch' in options ? { batchHandler: (events: readonly Recorded<ShopEvent>[]) => void events.forEach(handle) } : { handler: handle }),
      });
      subscription.start();
      stops.push(() => subscription.stop());
      await waitUntil(async () => seen.length === EXPECTED.length && (await checkpointOf(backend, subscription)) === head);
      assert.deepEqual(seen, EXPECTED);
    });
  }

  it('a subscription filtered by type gets only the asked parts', async () => {
    const { backend, head } = await shop();
    const seen: string[] = [];
    const subscription = new Subscription<ShopEvent>({ backend, name: 'payments', types: ['PaymentTaken'], batchSize: 1, handler: (e) => void seen.push(label(e)), logger: silentLogger, leaderLock: false, pollIntervalMs: 10 });
    subscription.start();
    stops.push(() => subscription.stop());
    await waitUntil(async () => (await backend.checkpoints.load('payments')) === head);
    assert.deepEqual(seen, ['1:PaymentTaken:a', '3:PaymentTaken:c', '4:PaymentTaken:b']);
  });

  it('a handler that stops on the second part leaves the checkpoint before the stored event', async () => {
    const { backend } = await shop();
    const subscription = new Subscription<ShopEvent>({
      backend,
      name: 'stops',
      batchSize: 10,
      handler: (event) => {
        if (event.type === 'PaymentTaken' && event.data.orderId === 'c') throw new Error('no');
      },
      onHandlerFailure: async () => 'stop',
      retry: { maxAttempts: 1 },
      logger: silentLogger,
      leaderLock: false,
      pollIntervalMs: 10,
    });
    subscription.start();
    stops.push(() => subscription.stop());
    await subscription.done.catch(() => undefined);
    assert.equal(await backend.checkpoints.load('stops'), 2, 'position 3 is handled only once both its parts are');
  });

  it('an automation keys the items of two parts apart: a completion recorded for part 0 does not skip part 1', async () => {
    const { backend, head } = await shop();
    // As a node that died after part 0's item of position 3 finished (and was recorded) leaves it.
    await backend.completions.markCompleted('mail', [{ position: 3, itemId: '1:mailbox' }]);
    const ran: string[] = [];
    const automation = new Automation<ShopEvent, string>({
      backend,
      name: 'mail',
      trigger: (event) => ({ key: 'mailbox', payload: label(event) }),
      execute: (item) => void ran.push(item.payload),
      logger: silentLogger,
      leaderLock: false,
      pollIntervalMs: 10,
    });
    automation.start();
    stops.push(() => automation.stop());
    await waitUntil(async () => (await backend.checkpoints.load('mail')) === head);
    assert.deepEqual(ran, EXPECTED.filter((line) => line !== '3:OrderPlaced:c'));
  });

  it('a view folds every part', async () => {
    const { backend, head } = await shop();
    const view = new MemoryView<Record<string, number>, ShopEvent>({
      backend,
      name: 'paid',
      initialState: {},
      evolve: (state, event) => (event.type === 'PaymentTaken' ? { ...state, [event.data.orderId]: event.data.amount } : state),
      logger: silentLogger,
      pollIntervalMs: 10,
    });
    view.start();
    stops.push(() => view.stop());
    await view.waitFor(head);
    assert.deepEqual(view.state, { a: 1, b: 2, c: 3 });
    const rebuilt = await view.rebuild();
    assert.equal(rebuilt.events, 6);
    assert.deepEqual(view.state, { a: 1, b: 2, c: 3 });
  });
});

async function checkpointOf(backend: MemoryBackend<ShopEvent>, subscription: Subscription<ShopEvent>): Promise<number | undefined> {
  return (await subscription.status()).position ?? (await backend.checkpoints.load(subscription.name));
}
