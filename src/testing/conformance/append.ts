import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { ErrorCode } from '../../core/errors.js';
import type { NewEvent } from '../../core/event.js';
import { assertStrictlyIncreasing, assertUnchanged, collect, expectCode, snapshot, UUID_V7, yieldToEventLoop } from './context.js';
import type { SuiteContext } from './context.js';

export function appendTests(ctx: SuiteContext): void {
  const it = ctx.it;
  describe('append', () => {
    it('writes a batch to a new stream with versions 1..n and increasing positions', async () => {
      const store = await ctx.store();
      const result = await store.append('order-1', [
        { type: 'Created', data: { n: 1 } },
        { type: 'ItemAdded', data: { n: 2 } },
        { type: 'ItemAdded', data: { n: 3 } },
      ]);
      assert.equal(result.nextExpectedVersion, 3);
      assert.deepEqual(result.events.map((e) => e.streamVersion), [1, 2, 3]);
      assert.deepEqual(result.events.map((e) => e.streamId), ['order-1', 'order-1', 'order-1']);
      assert.deepEqual(result.events.map((e) => e.type), ['Created', 'ItemAdded', 'ItemAdded']);
      assert.deepEqual(result.events.map((e) => e.data), [{ n: 1 }, { n: 2 }, { n: 3 }]);
      const positions = result.events.map((e) => e.position);
      assert.ok((positions[0] as number) >= 1, 'positions start at 1 or later');
      assertStrictlyIncreasing(positions, 'positions of one batch');
      assert.equal(result.position, positions[2]);
      assert.equal(await store.headPosition(), result.position);
      assert.equal(await store.streamVersion('order-1'), 3);
    });

    it('continues the stream version and the global position on the next append', async () => {
      const store = await ctx.store();
      const first = await store.append('s', [{ type: 'A', data: 1 }, { type: 'A', data: 2 }]);
      await store.append('other', [{ type: 'B', data: 0 }]);
      const second = await store.append('s', [{ type: 'A', data: 3 }]);
      assert.equal(second.nextExpectedVersion, 3);
      assert.equal(second.events[0]?.streamVersion, 3);
      assert.ok(second.position > first.position + 1, 'the other stream took a position in between');
      assert.deepEqual((await collect(store.readStream('s'))).map((e) => e.data), [1, 2, 3]);
    });

    it('gives each event a fresh UUIDv7 id unless one is supplied, and keeps a supplied id', async () => {
      const store = await ctx.store();
      const supplied = '0190b1d2-3c4d-7e5f-8a6b-7c8d9e0f1a2b';
      const result = await store.append('s', [
        { type: 'A', data: null },
        { type: 'A', data: null, id: supplied },
        { type: 'A', data: null },
      ]);
      const [a, b, c] = result.events.map((e) => e.id);
      assert.match(a as string, UUID_V7);
      assert.match(c as string, UUID_V7);
      assert.notEqual(a, c);
      assert.equal(b, supplied);
      assert.deepEqual((await collect(store.readAll())).map((e) => e.id), [a, b, c]);
    });

    it('stores a supplied id in lower case, so the same id in another case is a duplicate', async () => {
      const store = await ctx.store();
      const upper = '0190B1D2-3C4D-7E5F-8A6B-7C8D9E0F1A2B';
      const result = await store.append('s', [{ type: 'A', data: null, id: upper }]);
      assert.equal(result.events[0]?.id, upper.toLowerCase());
      assert.deepEqual((await collect(store.readAll())).map((e) => e.id), [upper.toLowerCase()]);
      await expectCode(() => store.append('t', [{ type: 'A', data: null, id: upper.toLowerCase() }]), ErrorCode.DuplicateEventId);
    });

    it('makes ids that carry the time they were made in (UUIDv7), all different', async () => {
      const store = await ctx.store();
      const before = Date.now();
      const result = await store.append('s', Array.from({ length: 200 }, () => ({ type: 'A', data: null })));
      const after = Date.now();
      const ids = result.events.map((e) => e.id);
      assert.equal(new Set(ids).size, ids.length);
      for (const id of ids) {
        assert.match(id, UUID_V7);
        const millis = parseInt(id.replaceAll('-', '').slice(0, 12), 16);
        assert.ok(millis >= before && millis <= after, `id ${id} says ${millis}, made between ${before} and ${after}`);
      }
    });

    it('returns exactly what is read back (ids, positions, versions, data, metadata, timestamps)', async () => {
      const store = await ctx.store();
      await store.append('noise', [{ type: 'N', data: 0 }]);
      const result = await store.append('s', [
        { type: 'A', data: { nested: { list: [1, 'two', null, true] }, dropped: undefined }, metadata: { correlationId: 'c-1' } },
        { type: 'B', data: 'text' },
      ]);
      for (const event of result.events) {
        assert.ok(event.timestamp instanceof Date && !Number.isNaN(event.timestamp.getTime()), 'timestamp is a valid Date');
      }
      // JSON has no undefined: the stored (and returned) data has no `dropped` key.
      assert.deepEqual(result.events[0]?.data, { nested: { list: [1, 'two', null, true] } });
      assert.deepEqual(result.events[1]?.metadata, {});
      const fromStream = await collect(store.readStream('s'));
      const fromAll = await collect(store.readAll({ after: result.events[0]!.position - 1 }));
      assert.deepEqual(fromStream, result.events);
      assert.deepEqual(fromAll, result.events);
    });

    it('writes nothing when the third event of a batch is not serialisable', async () => {
      const store = await ctx.store();
      await store.append('s', [{ type: 'A', data: 1 }]);
      const before = await snapshot(store, ['s', 'fresh']);
      const circular: Record<string, unknown> = { a: 1 };
      circular.self = circular;
      const bad: { name: string; events: NewEvent[] }[] = [
        { name: 'BigInt data', events: [{ type: 'A', data: 2 }, { type: 'A', data: 3 }, { type: 'A', data: { n: 10n } }] },
        { name: 'circular data', events: [{ type: 'A', data: 2 }, { type: 'A', data: 3 }, { type: 'A', data: circular }] },
        { name: 'BigInt metadata', events: [{ type: 'A', data: 2 }, { type: 'A', data: 3 }, { type: 'A', data: 4, metadata: { big: 1n } }] },
      ];
      for (const { name, events } of bad) {
        for (const stream of ['s', 'fresh']) {
          await expectCode(() => store.append(stream, events), ErrorCode.Serialization);
          await assertUnchanged(store, before, `${name} on ${stream}`);
        }
      }
    });

    it('writes nothing when an event id repeats inside the batch', async () => {
      const store = await ctx.store();
      await store.append('s', [{ type: 'A', data: 1 }]);
      const before = await snapshot(store, ['s', 'fresh']);
      const id = '0190b1d2-3c4d-7e5f-8a6b-000000000001';
      for (const stream of ['s', 'fresh']) {
        await expectCode(
          () => store.append(stream, [{ type: 'A', data: 2, id }, { type: 'A', data: 3 }, { type: 'A', data: 4, id }]),
          ErrorCode.DuplicateEventId,
        );
        await assertUnchanged(store, before, `duplicate id inside a batch on ${stream}`);
      }
    });

    it('writes nothing when an event id is already stored, in this stream or another', async () => {
      const store = await ctx.store();
      const existing = (await store.append('s', [{ type: 'A', data: 1 }])).events[0]!.id;
      await store.append('t', [{ type: 'A', data: 1 }]);
      const before = await snapshot(store, ['s', 't', 'fresh']);
      for (const stream of ['s', 't', 'fresh']) {
        const error = await expectCode(
          () => store.append(stream, [{ type: 'A', data: 2 }, { type: 'A', data: 3 }, { type: 'A', data: 4, id: existing }]),
          ErrorCode.DuplicateEventId,
        );
        assert.equal((error as unknown as { eventId?: unknown }).eventId, existing);
        await assertUnchanged(store, before, `an already stored id on ${stream}`);
      }
      // The store still works after the rejected batch.
      const next = await store.append('s', [{ type: 'A', data: 5 }], { expectedVersion: 1 });
      assert.equal(next.nextExpectedVersion, 2);
      // A refused batch may leave a gap in positions; the head is still the last stored position.
      assert.equal(await store.headPosition(), next.position);
      assert.ok(next.position > before.head);
    });

    it('onAppend listeners hear of an append through the same handle, until removed', async () => {
      const store = await ctx.store();
      const heard: number[] = [];
      const remove = store.onAppend((position) => heard.push(position));
      const result = await store.append('s', [{ type: 'A', data: 1 }, { type: 'A', data: 2 }]);
      // A hint may come late: wait for it rather than expect it synchronously.
      const deadline = Date.now() + 5_000;
      while (!heard.some((p) => p >= result.position)) {
        assert.ok(Date.now() < deadline, `no onAppend call for position ${result.position} within 5 s (heard ${heard.join(',')})`);
        await yieldToEventLoop();
      }
      remove();
      remove();
    });
  });
}
