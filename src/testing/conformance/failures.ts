import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { ErrorCode } from '../../core/errors.js';
import type { NewEvent } from '../../core/event.js';
import type { EventStore } from '../../core/store.js';
import { assertUnchanged, collect, expectCode, snapshot } from './context.js';
import type { SuiteContext } from './context.js';

/** Arguments the type system would refuse, as plain JavaScript callers can still pass them. */
const loose = <T>(value: unknown): T => value as T;

interface BadCall {
  name: string;
  code: string;
  call: (store: EventStore) => Promise<unknown>;
}

const event: NewEvent = { type: 'A', data: 1 };
const circular: Record<string, unknown> = {};
circular.self = circular;

const BAD_APPENDS: BadCall[] = [
  { name: 'empty stream id', code: ErrorCode.InvalidArgument, call: (s) => s.append('', [event]) },
  { name: 'number stream id', code: ErrorCode.InvalidArgument, call: (s) => s.append(loose(42), [event]) },
  { name: 'null stream id', code: ErrorCode.InvalidArgument, call: (s) => s.append(loose(null), [event]) },
  { name: 'undefined stream id', code: ErrorCode.InvalidArgument, call: (s) => s.append(loose(undefined), [event]) },
  { name: 'object stream id', code: ErrorCode.InvalidArgument, call: (s) => s.append(loose({ id: 's' }), [event]) },
  ...[-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, '1', 'none', true].map(
    (expectedVersion): BadCall => ({
      name: `expectedVersion ${String(expectedVersion)}`,
      code: ErrorCode.InvalidArgument,
      call: (s) => s.append('s', [event], { expectedVersion: loose(expectedVersion) }),
    }),
  ),
  { name: 'empty event array', code: ErrorCode.InvalidArgument, call: (s) => s.append('s', []) },
  { name: 'events not an array', code: ErrorCode.InvalidArgument, call: (s) => s.append('s', loose(event)) },
  { name: 'null event', code: ErrorCode.InvalidArgument, call: (s) => s.append('s', [event, loose(null)]) },
  { name: 'event without type', code: ErrorCode.InvalidArgument, call: (s) => s.append('s', [event, loose({ data: 1 })]) },
  { name: 'event with empty type', code: ErrorCode.InvalidArgument, call: (s) => s.append('s', [event, { type: '', data: 1 }]) },
  { name: 'event with number type', code: ErrorCode.InvalidArgument, call: (s) => s.append('s', [event, loose({ type: 7, data: 1 })]) },
  { name: 'BigInt data', code: ErrorCode.Serialization, call: (s) => s.append('s', [event, { type: 'A', data: 1n }]) },
  { name: 'circular data', code: ErrorCode.Serialization, call: (s) => s.append('s', [event, { type: 'A', data: circular }]) },
  { name: 'undefined data', code: ErrorCode.Serialization, call: (s) => s.append('s', [event, { type: 'A', data: undefined }]) },
  { name: 'function data', code: ErrorCode.Serialization, call: (s) => s.append('s', [event, { type: 'A', data: () => 1 }]) },
  { name: 'circular metadata', code: ErrorCode.Serialization, call: (s) => s.append('s', [event, { type: 'A', data: 1, metadata: circular }]) },
  { name: 'array metadata', code: ErrorCode.InvalidArgument, call: (s) => s.append('s', [event, { type: 'A', data: 1, metadata: loose([]) }]) },
  { name: 'string metadata', code: ErrorCode.InvalidArgument, call: (s) => s.append('s', [event, { type: 'A', data: 1, metadata: loose('m') }]) },
  ...['not-a-uuid', '', '0190b1d2-3c4d-7e5f-8a6b-7c8d9e0f1a2', '0190b1d2-3c4d-7e5f-8a6b-7c8d9e0f1a2bX', 42].map(
    (id): BadCall => ({
      name: `event id ${JSON.stringify(id)}`,
      code: ErrorCode.InvalidArgument,
      call: (s) => s.append('s', [event, { type: 'A', data: 1, id: loose(id) }]),
    }),
  ),
];

const BAD_READS: BadCall[] = [
  { name: 'readStream empty stream id', code: ErrorCode.InvalidArgument, call: (s) => collect(s.readStream('')) },
  { name: 'readStream number stream id', code: ErrorCode.InvalidArgument, call: (s) => collect(s.readStream(loose(1))) },
  ...[0, -1, 1.5, Number.NaN, '2'].map(
    (fromVersion): BadCall => ({
      name: `readStream fromVersion ${String(fromVersion)}`,
      code: ErrorCode.InvalidArgument,
      call: (s) => collect(s.readStream('s', { fromVersion: loose(fromVersion) })),
    }),
  ),
  ...[0, -1, 1.5, Number.NaN, '2'].flatMap((limit): BadCall[] => [
    { name: `readStream limit ${String(limit)}`, code: ErrorCode.InvalidArgument, call: (s) => collect(s.readStream('s', { limit: loose(limit) })) },
    { name: `readAll limit ${String(limit)}`, code: ErrorCode.InvalidArgument, call: (s) => collect(s.readAll({ limit: loose(limit) })) },
  ]),
  { name: 'readStream direction', code: ErrorCode.InvalidArgument, call: (s) => collect(s.readStream('s', { direction: loose('sideways') })) },
  ...[-1, 1.5, Number.NaN, '3', Number.POSITIVE_INFINITY].map(
    (after): BadCall => ({
      name: `readAll after ${String(after)}`,
      code: ErrorCode.InvalidArgument,
      call: (s) => collect(s.readAll({ after: loose(after) })),
    }),
  ),
  { name: 'readAll types not an array', code: ErrorCode.InvalidArgument, call: (s) => collect(s.readAll({ types: loose('A') })) },
  { name: 'readAll types with an empty name', code: ErrorCode.InvalidArgument, call: (s) => collect(s.readAll({ types: [''] })) },
  { name: 'readAll types with a number', code: ErrorCode.InvalidArgument, call: (s) => collect(s.readAll({ types: loose([1]) })) },
  { name: 'streamVersion empty stream id', code: ErrorCode.InvalidArgument, call: (s) => s.streamVersion('') },
  { name: 'streamVersion number stream id', code: ErrorCode.InvalidArgument, call: (s) => s.streamVersion(loose(1)) },
];

export function failureTests(ctx: SuiteContext): void {
  const it = ctx.it;
  describe('bad input', () => {
    it('each bad append is a typed error and writes nothing', async () => {
      const store = await ctx.store();
      await store.append('s', [{ type: 'A', data: 0 }]);
      const before = await snapshot(store, ['s']);
      for (const bad of BAD_APPENDS) {
        const error = await expectCode(() => bad.call(store), bad.code).catch((e: unknown) => {
          throw new assert.AssertionError({ message: `${bad.name}: ${(e as Error).message}` });
        });
        assert.ok(error.message.length > 0, `${bad.name} explains itself`);
        await assertUnchanged(store, before, bad.name);
      }
      // Still usable afterwards.
      assert.equal((await store.append('s', [event], { expectedVersion: 1 })).nextExpectedVersion, 2);
    });

    it('each bad read argument is a typed error', async () => {
      const store = await ctx.store();
      await store.append('s', [{ type: 'A', data: 0 }, { type: 'A', data: 1 }]);
      const before = await snapshot(store, ['s']);
      for (const bad of BAD_READS) {
        await expectCode(() => bad.call(store), bad.code).catch((e: unknown) => {
          throw new assert.AssertionError({ message: `${bad.name}: ${(e as Error).message}` });
        });
      }
      await assertUnchanged(store, before, 'bad reads');
    });
  });

  describe('closed store', () => {
    it('every call after close throws ESKIT_STORE_CLOSED; closing twice is fine', async () => {
      const store = await ctx.store();
      await store.append('s', [event]);
      await store.close();
      await store.close();
      await expectCode(() => store.append('s', [event]), ErrorCode.StoreClosed);
      await expectCode(() => collect(store.readAll()), ErrorCode.StoreClosed);
      await expectCode(() => collect(store.readStream('s')), ErrorCode.StoreClosed);
      await expectCode(() => store.streamVersion('s'), ErrorCode.StoreClosed);
      await expectCode(() => store.headPosition(), ErrorCode.StoreClosed);
      await store.close();
    });

    it('a read in progress stops with ESKIT_STORE_CLOSED at its next page', async () => {
      const store = await ctx.store({ pageSize: 2 });
      await store.append('s', Array.from({ length: 5 }, (_, i) => ({ type: 'A', data: i })));
      const iterators = [store.readAll()[Symbol.asyncIterator](), store.readStream('s')[Symbol.asyncIterator]()];
      for (const iterator of iterators) assert.deepEqual((await iterator.next()).value?.data, 0);
      await store.close();
      for (const iterator of iterators) {
        assert.deepEqual((await iterator.next()).value?.data, 1, 'the page already fetched is still delivered');
        await expectCode(() => iterator.next(), ErrorCode.StoreClosed);
      }
    });

    (ctx.harness.openAnother ? it : () => undefined)('closing one handle leaves another handle on the same storage open', {}, async () => {
      const store = await ctx.store();
      const other = await ctx.another(store);
      await other.close();
      await expectCode(() => other.headPosition(), ErrorCode.StoreClosed);
      const written = await store.append('s', [event]);
      assert.equal(await store.headPosition(), written.position);
    });
  });

  describe('corrupt events', () => {
    it('reading a corrupt row throws ESKIT_CORRUPT_EVENT naming its position, after the events before it', async () => {
      // The corrupt row shares a page with the two before it: rows are decoded one at a time, not per page.
      const store = await ctx.store();
      const written = await store.append('s', Array.from({ length: 5 }, (_, i) => ({ type: 'A', data: { i } })));
      await store.append('t', [event]);
      const bad = written.events[2]!;
      await ctx.harness.corruptEvent(store, bad.position);
      const reads: [string, () => AsyncIterable<{ position: number }>][] = [
        ['readAll', () => store.readAll()],
        ['readAll raw', () => store.readAll({ raw: true })],
        ['readStream', () => store.readStream('s')],
        ['readStream raw', () => store.readStream('s', { raw: true })],
      ];
      for (const [name, read] of reads) {
        const seen: number[] = [];
        const error = await expectCode(async () => {
          for await (const e of read()) seen.push(e.position);
        }, ErrorCode.CorruptEvent);
        assert.deepEqual(seen, written.events.slice(0, 2).map((e) => e.position), `${name} delivers the events before the corrupt one`);
        assert.equal((error as unknown as { position?: unknown }).position, bad.position);
        assert.match(error.message, new RegExp(`position ${bad.position}\\b`));
      }
      // Reading past it, and reading backward down to it, still work.
      const rest = await collect(store.readAll({ after: bad.position }));
      assert.deepEqual(rest.map((e) => e.position), [...written.events.slice(3).map((e) => e.position), (await store.headPosition())]);
      const backward: number[] = [];
      await expectCode(async () => {
        for await (const e of store.readStream('s', { direction: 'backward' })) backward.push(e.streamVersion);
      }, ErrorCode.CorruptEvent);
      assert.deepEqual(backward, [5, 4]);
      assert.equal(await store.streamVersion('s'), 5);
    });
  });
}
