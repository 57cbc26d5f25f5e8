import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { ErrorCode } from '../../core/errors.js';
import { STREAM_ARCHIVED, STREAM_DELETED } from '../../core/lifecycle.js';
import { isRedacted } from '../../core/personal/types.js';
import { EventRegistry } from '../../core/registry.js';
import { collect, expectCode } from './context.js';
import type { SuiteContext } from './context.js';
import { seed, versions } from './lifecycle.js';

type Customer = { type: 'Registered'; data: { customerId: string; email: unknown } };

/** archiveStream and readArchived: a finished stream leaves the log for the archive, and reads back from there. */
export function archiveTests(ctx: SuiteContext): void {
  const it = ctx.it;
  const hooks = ctx.harness.lifecycle;

  describe('archiveStream', () => {
    it('moves the stream out of every read of the log and into the archive, appends $stream.archived, and refuses appends', async () => {
      const store = await ctx.store();
      const archivedPositions = await seed(store, 'order-1', 3);
      const [other] = await seed(store, 'order-2', 1);
      const head = await store.headPosition();
      const { position } = await store.archiveStream('order-1');
      assert.ok(position > head, 'the lifecycle event takes a fresh position');
      assert.deepEqual(await versions(store, 'order-1'), []);
      assert.equal(await store.streamVersion('order-1'), 0);
      assert.deepEqual((await collect(store.readAll())).map((e) => e.position), [other], 'an unfiltered typed read has neither the events nor the system event');
      const [event] = (await collect(store.readAll({ types: [STREAM_ARCHIVED] }))).filter((e) => e.streamId === 'order-1');
      assert.deepEqual(event?.data, { version: 3, appends: 'refuse' });
      assert.equal(event?.position, position);
      assert.deepEqual((await collect(store.readAll({ category: 'order', types: [STREAM_ARCHIVED] }))).map((e) => e.position), [position], 'category readers get it');
      const archived = await collect(store.readArchived('order-1'));
      assert.deepEqual(archived.map((e) => [e.streamVersion, e.data, e.position]), [[1, 1, archivedPositions[0]], [2, 2, archivedPositions[1]], [3, 3, archivedPositions[2]]]);
      await expectCode(() => store.append('order-1', [{ type: 'A', data: 4 }]), ErrorCode.StreamDeleted);
      assert.deepEqual(await collect(store.readArchived('order-2')), [], 'a stream never archived has an empty archive');
    });

    it('refuses an absent stream and a wrong expected version, changing nothing', async () => {
      const store = await ctx.store();
      await expectCode(() => store.archiveStream('none'), ErrorCode.StreamNotFound);
      await seed(store, 'x', 2);
      await expectCode(() => store.archiveStream('x', { expectedVersion: 1 }), ErrorCode.Concurrency);
      assert.deepEqual(await versions(store, 'x'), [1, 2]);
      assert.deepEqual(await collect(store.readArchived('x')), []);
      await store.archiveStream('x', { expectedVersion: 2 });
      await expectCode(() => store.archiveStream('x'), ErrorCode.StreamNotFound);
    });

    it('a deleted-and-restarted stream can be archived after its deletion; reads of the archive page', async () => {
      const store = await ctx.store({ pageSize: 2 });
      await seed(store, 's', 2);
      await store.deleteStream('s');
      await seed(store, 's', 5);
      await store.archiveStream('s');
      assert.deepEqual((await collect(store.readArchived('s'))).map((e) => e.streamVersion), [1, 2, 3, 4, 5]);
      const raw = await collect(store.readArchived('s', { raw: true }));
      assert.equal(raw.length, 5);
      const lifecycle = (await collect(store.readAll({ types: [STREAM_DELETED, STREAM_ARCHIVED] }))).map((e) => e.type);
      assert.deepEqual(lifecycle, [STREAM_DELETED, STREAM_ARCHIVED]);
    });

    if (hooks) {
      it('removes the stream\'s snapshots', async () => {
        const store = await ctx.store();
        await seed(store, 'snap', 2);
        await hooks.writeSnapshot(store, 'snap', 'decider');
        await store.archiveStream('snap');
        assert.equal(await hooks.snapshotCount(store, 'snap'), 0);
      });
    }

    it('the archive honours forget: personal fields of an archived stream read as the marker once their subject is forgotten', async () => {
      const registry = new EventRegistry<Customer>({ Registered: { personal: { subject: (data) => data.customerId, fields: ['email'] } } });
      const store = await ctx.store<Customer>({ registry });
      await store.append('customer-7', [{ type: 'Registered', data: { customerId: 'c7', email: 'dora.archive@example.com' } }]);
      await store.archiveStream('customer-7');
      assert.doesNotMatch(JSON.stringify(await collect(store.readArchived('customer-7', { raw: true }))), /dora/, 'the archive holds envelopes');
      assert.equal((await collect(store.readArchived('customer-7')))[0]?.data.email, 'dora.archive@example.com');
      await store.forget('c7');
      const [event] = await collect(store.readArchived('customer-7'));
      assert.ok(isRedacted(event?.data.email), `read as the marker, got ${JSON.stringify(event?.data.email)}`);
    });
  });
}
