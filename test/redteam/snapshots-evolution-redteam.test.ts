// Red-team cases for snapshots (issue 19, part 1) and schema evolution (part 3): each test states what
// should hold; the ones that found a bug say so.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CommandHandler } from '../../src/decider/index.js';
import type { Decider } from '../../src/decider/index.js';
import { silentLogger } from '../../src/core/logger.js';
import { EventRegistry } from '../../src/core/registry.js';
import { sqlite } from '../../src/sqlite/index.js';
import { databasesAfterEach } from '../sqlite/helpers.js';

const files = databasesAfterEach('redteam-snap');

// ---- a stored type that a later deploy splits -----------------------------------------------------

type OldEvent = { type: 'CheckedOut'; data: { orderId: string; amount: number } };
type NewEvent = { type: 'OrderPlaced'; data: { orderId: string } } | { type: 'PaymentTaken'; data: { orderId: string; amount: number } };
interface Totals {
  orders: number;
  paid: number;
}

/** Old code: one CheckedOut per checkout. */
const oldDecider: Decider<Totals, { orderId: string; amount: number }, OldEvent> = {
  initialState: () => ({ orders: 0, paid: 0 }),
  decide: (_s, c) => ({ type: 'CheckedOut', data: c }),
  evolve: (s, e) => ({ orders: s.orders + 1, paid: s.paid + e.data.amount }),
};
/** New code: the same state, from the two events CheckedOut is now read as. */
const newDecider: Decider<Totals, { orderId: string; amount: number }, NewEvent> = {
  initialState: () => ({ orders: 0, paid: 0 }),
  decide: (_s, c) => [
    { type: 'OrderPlaced', data: { orderId: c.orderId } },
    { type: 'PaymentTaken', data: c },
  ],
  evolve: (s, e) => (e.type === 'OrderPlaced' ? { ...s, orders: s.orders + 1 } : { ...s, paid: s.paid + e.data.amount }),
};
const splitRegistry = (): EventRegistry<NewEvent> =>
  new EventRegistry<NewEvent>(
    { OrderPlaced: {}, PaymentTaken: {} },
    {
      splits: {
        CheckedOut: {
          into: ['OrderPlaced', 'PaymentTaken'],
          split: (data) => {
            const { orderId, amount } = data as { orderId: string; amount: number };
            return [
              { type: 'OrderPlaced', data: { orderId } },
              { type: 'PaymentTaken', data: { orderId, amount } },
            ];
          },
        },
      },
    },
  );

describe('red team: snapshots and schema evolution', () => {
  it('a snapshot whose last event is a stored event later split: the load folds none of its parts again', async () => {
    const path = files.freshPath();
    // Old code writes two CheckedOut events and a snapshot after the second (every: 2).
    const before = sqlite<OldEvent>({ path });
    const oldHandler = new CommandHandler({ backend: before, decider: oldDecider, snapshots: { version: 1, every: 2, logger: silentLogger } });
    await oldHandler.handle('shop-1', { orderId: 'a', amount: 10 });
    await oldHandler.handle('shop-1', { orderId: 'b', amount: 20 });
    await oldHandler.flushSnapshots();
    assert.equal((await before.snapshots.load('shop-1', 'decider'))?.streamVersion, 2);
    await before.close();

    // The deploy splits CheckedOut. The state's shape and meaning are unchanged (the same totals), so
    // the snapshot version stays 1: the old snapshot is still a right state after event 2.
    const after = sqlite<NewEvent>({ path, registry: splitRegistry() });
    files.closeAfterTest(() => after.close());
    const replayed = await new CommandHandler({ backend: after, decider: newDecider }).aggregate('shop-1');
    assert.deepEqual(replayed.state, { orders: 2, paid: 30 });
    const fromSnapshot = await new CommandHandler({ backend: after, decider: newDecider, snapshots: { version: 1, logger: silentLogger } }).aggregate('shop-1');
    // Bug: #resume skips only the first event read (part 0, which keeps the stored id) and folds part 1
    // (PaymentTaken of the snapshot's own event, stream version 2) a second time: paid 50.
    assert.deepEqual(fromSnapshot, replayed);
  });
});

describe('red team: split parts and the readers', () => {
  // Not a bug by the spec: the conformance suite (src/testing/conformance/evolution.ts, "a backward read
  // keeps the parts in their order") asks for parts in forward order on a backward read. Left skipped as
  // a design question: with it, the first event of readStream(id, { direction: 'backward', limit: 1 })
  // is part 0, not the stream's last event (part n-1), so "read the last event" code sees the wrong one.
  it.skip('readStream backward yields the parts of a split stored event newest first, like every other event', async () => {
    const path = files.freshPath();
    const before = sqlite<OldEvent>({ path });
    await before.store.append('shop-1', [{ type: 'CheckedOut', data: { orderId: 'a', amount: 10 } }]);
    await before.close();
    const after = sqlite<NewEvent>({ path, registry: splitRegistry() });
    files.closeAfterTest(() => after.close());
    await after.store.append('shop-1', [{ type: 'OrderPlaced', data: { orderId: 'b' } }]);
    const forward: string[] = [];
    for await (const e of after.store.readStream('shop-1')) forward.push(`${e.streamVersion}:${e.type}`);
    assert.deepEqual(forward, ['1:OrderPlaced', '1:PaymentTaken', '2:OrderPlaced']);
    const backward: string[] = [];
    for await (const e of after.store.readStream('shop-1', { direction: 'backward' })) backward.push(`${e.streamVersion}:${e.type}`);
    // "The last event of the stream" (backward, first one read) must be the last one a forward read ends with.
    assert.deepEqual(backward, [...forward].reverse());
  });
});
