import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { runInNewContext } from 'node:vm';
import { ErrorCode } from '../../core/errors.js';
import type { Metadata, NewEvent } from '../../core/event.js';
import type { EventStore } from '../../core/store.js';
import { assertUnchanged, collect, expectCode, snapshot } from './context.js';
import type { SuiteContext } from './context.js';

/** Appends and checks that the append result, readStream and readAll all give back `expected`. */
async function roundTrip(store: EventStore, streamId: string, events: NewEvent[]): Promise<void> {
  const result = await store.append(streamId, events);
  const fromStream = await collect(store.readStream(streamId, { fromVersion: result.events[0]!.streamVersion }));
  const fromAll = await collect(store.readAll({ after: result.events[0]!.position - 1, limit: events.length }));
  assert.deepEqual(fromStream, result.events);
  assert.deepEqual(fromAll, result.events);
  assert.deepEqual(
    fromStream.map((e) => [e.type, e.data, e.metadata]),
    events.map((e) => [e.type, e.data, e.metadata ?? {}]),
  );
}

/** Appends, then checks that the result and both reads give back `expected` data and metadata (default: as given). */
async function roundTripAs(store: EventStore, streamId: string, cases: { event: NewEvent; data: unknown; metadata?: Metadata }[]): Promise<void> {
  const result = await store.append(streamId, cases.map((c) => c.event));
  const fromStream = await collect(store.readStream(streamId, { fromVersion: result.events[0]!.streamVersion }));
  const fromAll = await collect(store.readAll({ after: result.events[0]!.position - 1, limit: cases.length }));
  assert.deepEqual(fromStream, result.events);
  assert.deepEqual(fromAll, result.events);
  assert.deepEqual(
    fromStream.map((e) => [e.data, e.metadata]),
    cases.map((c) => [c.data, c.metadata ?? c.event.metadata ?? {}]),
  );
}

/** Text PostgreSQL cannot store: NUL, and lone UTF-16 surrogates (high, low, and half an emoji at the end). */
const UNSTORABLE_TEXT = ['a\u0000b', '\u0000', 'a\ud800b', '\udc00x', 'cut \ud83d'];

class Money {
  constructor(readonly amount: number) {}
}

/** Values JSON.stringify would turn into something else (null, {}, a string, a plain object) or drop. */
const UNFAITHFUL_VALUES: [string, unknown][] = [
  ['NaN', Number.NaN],
  ['Infinity', Number.POSITIVE_INFINITY],
  ['-Infinity', Number.NEGATIVE_INFINITY],
  ['a BigInt', 10n],
  ['a Map', new Map([['a', 1]])],
  ['a Set', new Set([1])],
  ['a function', () => 1],
  ['a symbol', Symbol('s')],
  ['a Date', new Date(0)],
  ['a class instance', new Money(5)],
  ['a RegExp', /x/],
  ['a Uint8Array', new Uint8Array([1])],
  ['a boxed number', Object(1) as unknown],
];

interface Refusal {
  name: string;
  /** Default 's'. */
  streamId?: string;
  /** The append's events; the refused one is the last. */
  events: NewEvent[];
  /** What the error's `path` must be. */
  path: string;
  /** Whether the message names the event's index. Default true. */
  event?: boolean;
}

/** The append must fail with ESKIT_SERIALIZATION whose path and message name `path`, and write nothing. */
async function expectRefused(store: EventStore, { name, streamId = 's', events, path, event = true }: Refusal): Promise<void> {
  const before = await snapshot(store, ['s', streamId]);
  const error = await expectCode(() => store.append(streamId, events), ErrorCode.Serialization);
  assert.equal((error as { path?: unknown }).path, path, `${name}: the error's path (message: ${error.message})`);
  assert.ok(error.message.includes(path), `${name}: the message names ${path}: ${error.message}`);
  if (event) {
    const index = events.length - 1;
    assert.match(error.message, new RegExp(`\\bevent ${index}\\b`), `${name}: the message names event ${index}`);
  }
  await assertUnchanged(store, before, `refused ${name}`);
}

/** `{ a: { a: ... 1 } }`, `levels` objects deep. */
function nested(levels: number): unknown {
  let value: unknown = 1;
  for (let i = 0; i < levels; i++) value = { a: value };
  return value;
}

const UNICODE = {
  emoji: '😀👩‍👩‍👧‍👦🏳️‍🌈 🇯🇵',
  cjk: '漢字かなカナ한국어',
  rtl: 'مرحبا بالعالم שלום עולם',
  combining: 'e\u0301 n\u0303 Å',
  separators: 'line\u2028para\u2029tab\tnewline\nquote"backslash\\',
  zeroWidth: 'a\u200bb\ufeffc',
  astral: '𝄞𝕏𠀀',
};

export function payloadTests(ctx: SuiteContext): void {
  const it = ctx.it;
  describe('payloads', () => {
    it('metadata round trips: correlationId, causationId, free keys and nested values', async () => {
      const store = await ctx.store();
      const metadata: Metadata = {
        correlationId: '0190b1d2-3c4d-7e5f-8a6b-7c8d9e0f1a2b',
        causationId: 'command-42',
        userId: 'u-1',
        tenant: { id: 7, name: 'Acme', tags: ['a', 'b'], flags: { beta: true, legacy: false } },
        traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
        nothing: null,
        count: 0,
        list: [1, { deep: [[]] }, 'x'],
        'key with spaces': 'ok',
        'ключ': 'значение',
      };
      await roundTrip(store, 's', [
        { type: 'A', data: 1, metadata },
        { type: 'A', data: 2, metadata: { correlationId: 'c' } },
        { type: 'A', data: 3 },
        { type: 'A', data: 4, metadata: {} },
      ]);
    });

    it('JSON data of every shape round trips', async () => {
      const store = await ctx.store();
      const values: unknown[] = [
        null,
        true,
        false,
        0,
        -1.5,
        0.30000000000000004,
        Number.MAX_SAFE_INTEGER,
        -Number.MAX_SAFE_INTEGER,
        1e21,
        1e-7,
        '',
        'text',
        [],
        {},
        [1, 'a', null, [2, [3]], { b: false }],
        { a: { b: { c: { d: { e: [1, 2, { f: 'g' }] } } } }, emptyKey: { '': 1 }, num: 12.5 },
        { $ref: 'not special', __proto__x: 1, constructor: 'plain' },
      ];
      await roundTrip(store, 's', values.map((data) => ({ type: 'Shape', data })));
    });

    it('unicode round trips in data, metadata, type names and stream ids', async () => {
      const store = await ctx.store();
      await roundTrip(store, 's', [{ type: 'A', data: UNICODE, metadata: { ...UNICODE, [UNICODE.cjk]: UNICODE.rtl } }]);
      for (const [name, text] of Object.entries(UNICODE)) {
        await roundTrip(store, `stream-${text}`, [{ type: `Type-${text}`, data: { [text]: text }, metadata: { correlationId: text } }]);
        const events = await collect(store.readAll({ types: [`Type-${text}`] }));
        assert.equal(events.length, 1, `type filter on ${name}`);
        assert.equal(events[0]!.streamId, `stream-${text}`);
      }
    });

    it('NUL and lone surrogates are refused in stream ids, types, data and metadata, naming where, writing nothing', async () => {
      // PostgreSQL cannot store them, so no adapter does: code written against memory or SQLite must
      // not meet this for the first time in production.
      const store = await ctx.store();
      await store.append('s', [{ type: 'A', data: 'before' }]);
      const ok: NewEvent = { type: 'A', data: 'ok' };
      for (const bad of UNSTORABLE_TEXT) {
        const key = JSON.stringify(bad);
        const cases: Refusal[] = [
          { name: `${key} in a data string`, events: [ok, { type: 'A', data: { items: [{}, { note: bad }] } }], path: 'data.items[1].note' },
          { name: `${key} as the data`, events: [ok, { type: 'A', data: bad }], path: 'data' },
          { name: `${key} in a data key`, events: [ok, { type: 'A', data: { list: [{ [bad]: 1 }] } }], path: `data.list[0][${key}]` },
          { name: `${key} in a metadata value`, events: [ok, { type: 'A', data: 1, metadata: { note: bad } }], path: 'metadata.note' },
          { name: `${key} in a metadata key`, events: [ok, { type: 'A', data: 1, metadata: { [bad]: 'x' } }], path: `metadata[${key}]` },
          { name: `${key} in a type`, events: [ok, { type: `T${bad}`, data: 1 }], path: 'type' },
          { name: `${key} in a stream id`, streamId: `s${bad}`, events: [ok], path: 'streamId', event: false },
        ];
        for (const refusal of cases) await expectRefused(store, refusal);
        // Such names cannot have been stored, so reads find nothing rather than failing.
        assert.equal(await store.streamVersion(`s${bad}`), 0);
        assert.deepEqual(await collect(store.readStream(`s${bad}`)), []);
        assert.deepEqual(await collect(store.readAll({ types: [`T${bad}`] })), []);
      }
      // Only the characters are refused: a backslash and the text "u0000", or a paired surrogate, are ordinary text.
      await roundTrip(store, 's', [{ type: 'A', data: { text: '\\u0000 \\ud800 \ud83d\ude00' }, metadata: { note: '\\u0000' } }]);
    });

    it('values JSON would change or drop are refused with ESKIT_SERIALIZATION naming their path, writing nothing', async () => {
      const store = await ctx.store();
      await store.append('s', [{ type: 'A', data: 'before' }]);
      const ok: NewEvent = { type: 'A', data: 'ok' };
      const priced = (price: unknown): unknown => ({ items: [{ price: 1 }, { price: 2 }, { price: 3 }, { price }] });
      const refusals: Refusal[] = UNFAITHFUL_VALUES.flatMap(([name, value]): Refusal[] => [
        { name: `${name} in data`, events: [ok, { type: 'Priced', data: priced(value) }], path: 'data.items[3].price' },
        { name: `${name} in metadata`, events: [ok, { type: 'A', data: 1, metadata: { deep: { list: [0, value] } } }], path: 'metadata.deep.list[1]' },
      ]);
      const holey = new Array<number>(3);
      holey[0] = 1;
      holey[2] = 3;
      const cycle: Record<string, unknown> = { name: 'root' };
      cycle.items = [{ parent: cycle }];
      const throwing = Object.defineProperty({}, 'boom', { enumerable: true, get: () => { throw new Error('getter failed'); } });
      refusals.push(
        { name: 'NaN as the data', events: [ok, { type: 'A', data: Number.NaN }], path: 'data' },
        { name: 'undefined as the data', events: [ok, { type: 'A', data: undefined }], path: 'data' },
        { name: 'a Map as the data', events: [ok, { type: 'A', data: new Map() }], path: 'data' },
        { name: 'undefined in an array', events: [ok, { type: 'A', data: { items: [1, 2, 3, undefined] } }], path: 'data.items[3]' },
        { name: 'an empty array slot', events: [ok, { type: 'A', data: { items: holey } }], path: 'data.items[1]' },
        { name: 'a cycle', events: [ok, { type: 'A', data: cycle }], path: 'data.items[0].parent' },
        { name: 'a symbol key', events: [ok, { type: 'A', data: { items: [{ [Symbol('hidden')]: 1 }] } }], path: 'data.items[0][Symbol(hidden)]' },
        { name: 'a key that needs quoting', events: [ok, { type: 'A', data: { 'unit price': Number.NaN } }], path: 'data["unit price"]' },
        { name: 'a getter that throws', events: [ok, { type: 'A', data: { nested: throwing } }], path: 'data.nested.boom' },
        { name: 'a Date in metadata', events: [ok, { type: 'A', data: 1, metadata: { at: new Date(0) } }], path: 'metadata.at' },
      );
      for (const refusal of refusals) await expectRefused(store, refusal);
    });

    it('nesting up to 1000 levels round trips, deeper is refused', async () => {
      const store = await ctx.store();
      await roundTrip(store, 'deep', [{ type: 'Deep', data: nested(1000) }]);
      const error = await expectCode(() => store.append('deep', [{ type: 'Deep', data: nested(1001) }]), ErrorCode.Serialization);
      assert.match(error.message, /1000 levels/);
      assert.equal(await store.streamVersion('deep'), 1);
    });

    it('the documented normalisations: undefined fields are left out, -0 is 0, any plain object reads back as a plain object', async () => {
      const store = await ctx.store();
      const otherRealm = runInNewContext('({ a: 1, list: [{ b: "two" }] })') as unknown;
      const nullPrototype = Object.assign(Object.create(null) as Record<string, unknown>, { a: 1, inner: Object.assign(Object.create(null) as object, { b: 2 }) });
      const protoKey = JSON.parse('{"__proto__": {"polluted": true}, "a": 1}') as unknown;
      await roundTripAs(store, 'norm', [
        {
          event: { type: 'A', data: { a: 1, gone: undefined, nested: { x: undefined, y: [1] } }, metadata: { keep: 1, gone: undefined } },
          data: { a: 1, nested: { y: [1] } },
          metadata: { keep: 1 },
        },
        { event: { type: 'A', data: { zero: -0, list: [-0, 1] } }, data: { zero: 0, list: [0, 1] } },
        { event: { type: 'A', data: -0 }, data: 0 },
        { event: { type: 'A', data: otherRealm }, data: { a: 1, list: [{ b: 'two' }] } },
        { event: { type: 'A', data: nullPrototype }, data: { a: 1, inner: { b: 2 } } },
        { event: { type: 'A', data: protoKey, metadata: protoKey as Metadata }, data: JSON.parse('{"__proto__": {"polluted": true}, "a": 1}'), metadata: JSON.parse('{"__proto__": {"polluted": true}, "a": 1}') as Metadata },
      ]);
      const events = await collect(store.readStream('norm'));
      assert.ok(Object.is((events[1]!.data as { zero: number }).zero, 0), '-0 reads back as 0');
      assert.ok(Object.is(events[2]!.data, 0));
      assert.equal(Object.getPrototypeOf(events[4]!.data), Object.prototype);
      assert.ok(Object.hasOwn(events[5]!.data as object, '__proto__'), 'a "__proto__" key stays an own key');
      assert.equal(({} as Record<string, unknown>).polluted, undefined);
    });

    it('extreme finite numbers round trip exactly', async () => {
      const store = await ctx.store();
      const numbers = [Number.MAX_VALUE, -Number.MAX_VALUE, Number.MIN_VALUE, -Number.MIN_VALUE, 2 ** 53, 2 ** 64, 1e-300, 123456789.12345679, 0.1 + 0.2];
      await roundTrip(store, 'n', [{ type: 'N', data: { numbers }, metadata: { numbers } }]);
    });

    it('a 1 MB payload round trips', async () => {
      const store = await ctx.store();
      const big = {
        text: 'x'.repeat(800 * 1024) + '😀漢字',
        rows: Array.from({ length: 8000 }, (_, i) => ({ i, name: `row-${i}`, ok: i % 2 === 0 })),
      };
      assert.ok(JSON.stringify(big).length > 1024 * 1024);
      await store.append('small', [{ type: 'Small', data: 1 }]);
      await roundTrip(store, 'big', [{ type: 'Big', data: big, metadata: { size: 'large' } }, { type: 'After', data: 2 }]);
      const all = await collect(store.readAll());
      assert.deepEqual(all.map((e) => e.type), ['Small', 'Big', 'After']);
    });
  });
}
