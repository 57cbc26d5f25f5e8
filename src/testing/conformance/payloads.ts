import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { ErrorCode, isEskitError } from '../../core/errors.js';
import type { Metadata, NewEvent } from '../../core/event.js';
import type { EventStore } from '../../core/store.js';
import { assertUnchanged, collect, snapshot } from './context.js';
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

    it("'\\u0000' in a string either round trips or is refused with a typed error, writing nothing", async () => {
      // PostgreSQL cannot store NUL in jsonb or text, so an adapter may refuse it; it must not write part
      // of the batch or leak a driver error.
      const store = await ctx.store();
      await store.append('s', [{ type: 'A', data: 'before' }]);
      const nul = 'a\u0000b';
      const cases: { name: string; streamId: string; events: NewEvent[] }[] = [
        { name: 'data', streamId: 's', events: [{ type: 'A', data: 'ok' }, { type: 'A', data: { text: nul } }] },
        { name: 'metadata', streamId: 's', events: [{ type: 'A', data: 'ok' }, { type: 'A', data: 1, metadata: { note: nul } }] },
        { name: 'metadata key', streamId: 's', events: [{ type: 'A', data: 'ok' }, { type: 'A', data: 1, metadata: { [nul]: 1 } }] },
        { name: 'type', streamId: 's', events: [{ type: 'A', data: 'ok' }, { type: `T${nul}`, data: 1 }] },
        { name: 'stream id', streamId: `s${nul}`, events: [{ type: 'A', data: 'ok' }] },
      ];
      for (const { name, streamId, events } of cases) {
        const before = await snapshot(store, ['s', streamId]);
        let refused: unknown;
        try {
          await roundTrip(store, streamId, events);
        } catch (error) {
          if (error instanceof assert.AssertionError) throw error;
          refused = error;
        }
        if (refused !== undefined) {
          assert.ok(
            isEskitError(refused, ErrorCode.Serialization) || isEskitError(refused, ErrorCode.InvalidArgument),
            `NUL in ${name}: refused with ${String(refused)}, expected ESKIT_SERIALIZATION or ESKIT_INVALID_ARGUMENT`,
          );
          await assertUnchanged(store, before, `a refused NUL in ${name}`);
        }
      }
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
