import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { ErrorCode } from '../../core/errors.js';
import type { EventStore, ExpectedVersion } from '../../core/store.js';
import { assertUnchanged, collect, expectCode, snapshot } from './context.js';
import type { SuiteContext } from './context.js';

/** Asserts the append is refused with a concurrency error carrying the real version, and writes nothing. */
async function expectConflict(store: EventStore, streamId: string, expected: ExpectedVersion, actual: number): Promise<void> {
  const before = await snapshot(store, [streamId]);
  const error = await expectCode(() => store.append(streamId, [{ type: 'A', data: 'x' }, { type: 'A', data: 'y' }], { expectedVersion: expected }), ErrorCode.Concurrency);
  const fields = error as unknown as { streamId?: unknown; expectedVersion?: unknown; actualVersion?: unknown };
  assert.equal(fields.actualVersion, actual, 'actualVersion is the stream version at the time of the write');
  assert.equal(fields.expectedVersion, expected);
  assert.equal(fields.streamId, streamId);
  await assertUnchanged(store, before, `a conflicting append (expected ${String(expected)}, actual ${actual})`);
}

async function seed(store: EventStore, streamId: string, count: number): Promise<void> {
  await store.append(streamId, Array.from({ length: count }, (_, i) => ({ type: 'Seed', data: i + 1 })));
}

export function expectedVersionTests(ctx: SuiteContext): void {
  const it = ctx.it;
  describe('expected version', () => {
    it('a number: succeeds when it equals the stream version, else conflicts', async () => {
      const store = await ctx.store();
      await seed(store, 's', 2);
      await expectConflict(store, 's', 1, 2);
      await expectConflict(store, 's', 3, 2);
      await expectConflict(store, 'missing', 2, 0);
      const ok = await store.append('s', [{ type: 'A', data: 3 }], { expectedVersion: 2 });
      assert.equal(ok.nextExpectedVersion, 3);
      assert.deepEqual(ok.events.map((e) => e.streamVersion), [3]);
      const again = await store.append('s', [{ type: 'A', data: 4 }], { expectedVersion: ok.nextExpectedVersion });
      assert.equal(again.nextExpectedVersion, 4);
      assert.equal(await store.streamVersion('s'), 4);
    });

    it('0: succeeds on a stream with no events, conflicts on one with events', async () => {
      const store = await ctx.store();
      const ok = await store.append('s', [{ type: 'A', data: 1 }], { expectedVersion: 0 });
      assert.equal(ok.nextExpectedVersion, 1);
      await expectConflict(store, 's', 0, 1);
    });

    it("'no_stream': succeeds on a stream with no events, conflicts on one with events", async () => {
      const store = await ctx.store();
      const ok = await store.append('s', [{ type: 'A', data: 1 }, { type: 'A', data: 2 }], { expectedVersion: 'no_stream' });
      assert.equal(ok.nextExpectedVersion, 2);
      await expectConflict(store, 's', 'no_stream', 2);
      assert.deepEqual((await collect(store.readStream('s'))).map((e) => e.data), [1, 2]);
    });

    it("'stream_exists': conflicts on a stream with no events, succeeds on one with events", async () => {
      const store = await ctx.store();
      await expectConflict(store, 's', 'stream_exists', 0);
      await seed(store, 's', 1);
      const ok = await store.append('s', [{ type: 'A', data: 2 }], { expectedVersion: 'stream_exists' });
      assert.equal(ok.nextExpectedVersion, 2);
      assert.equal(await store.streamVersion('s'), 2);
    });

    it("'any' (and no option at all): succeeds whatever the stream version", async () => {
      const store = await ctx.store();
      assert.equal((await store.append('s', [{ type: 'A', data: 1 }], { expectedVersion: 'any' })).nextExpectedVersion, 1);
      assert.equal((await store.append('s', [{ type: 'A', data: 2 }], { expectedVersion: 'any' })).nextExpectedVersion, 2);
      assert.equal((await store.append('s', [{ type: 'A', data: 3 }])).nextExpectedVersion, 3);
      assert.equal((await store.append('t', [{ type: 'A', data: 1 }], {})).nextExpectedVersion, 1);
      assert.deepEqual((await collect(store.readStream('s'))).map((e) => e.data), [1, 2, 3]);
    });

    it('a conflict is an eskit error with a message that says what to do', async () => {
      const store = await ctx.store();
      await seed(store, 's', 1);
      const error = await expectCode(() => store.append('s', [{ type: 'A', data: 1 }], { expectedVersion: 'no_stream' }), ErrorCode.Concurrency);
      assert.ok(error instanceof Error);
      assert.match(error.message, /"s"/);
      assert.match(error.message, /version 1/);
    });
  });
}
