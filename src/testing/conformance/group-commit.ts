import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { ErrorCode, isEskitError } from '../../core/errors.js';
import type { NewEvent } from '../../core/event.js';
import { EventRegistry } from '../../core/registry.js';
import type { AppendResult, ExpectedVersion } from '../../core/store.js';
import { assertStrictlyIncreasing, collect, yieldToEventLoop } from './context.js';
import type { SuiteContext } from './context.js';

export const TIMEOUT = { timeout: 30_000 };

/*
 * Appends started together, in one turn of the event loop (or while an earlier write is in flight),
 * may be written by an adapter as one group in one transaction. Whatever the adapter does, each append
 * keeps its own outcome: it is judged alone, in call order, against the versions the earlier appends
 * left, and it lands whole or not at all. These tests start their appends in one burst, so that an
 * adapter that groups them writes them together.
 */

type Outcome = PromiseSettledResult<AppendResult>;

function succeeded(outcome: Outcome | undefined, what: string): AppendResult {
  assert.ok(outcome !== undefined, `${what}: no outcome`);
  if (outcome.status === 'rejected') assert.fail(`${what} must succeed, but failed with ${explain(outcome.reason)}`);
  return outcome.value;
}

function failed(outcome: Outcome | undefined, code: string, what: string): Record<string, unknown> {
  assert.ok(outcome !== undefined, `${what}: no outcome`);
  if (outcome.status === 'fulfilled') {
    assert.fail(`${what} must fail with ${code}, but succeeded (stream version ${outcome.value.nextExpectedVersion})`);
  }
  assert.ok(isEskitError(outcome.reason, code), `${what} must fail with ${code}, got ${explain(outcome.reason)}`);
  return outcome.reason as unknown as Record<string, unknown>;
}

export function explain(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = (error as { code?: unknown }).code;
  return `${error.name}${code === undefined ? '' : ` [${String(code)}]`}: ${error.message}`;
}

/** Whether a stream at version `actual` satisfies `expected`: the rule every adapter enforces. */
export function satisfies(expected: ExpectedVersion, actual: number): boolean {
  return expected === 'any' || (expected === 'no_stream' && actual === 0) || (expected === 'stream_exists' && actual > 0) || expected === actual;
}

// ---- one burst to a few streams --------------------------------------------------------------------

interface Planned {
  stream: string;
  expected: ExpectedVersion;
  count: number;
  /** The stream's version after it, or the actual version its conflict reports. */
  then: { version: number } | { conflict: number };
}

/**
 * What applying these appends one after another, in this order, gives (stream `u` holds 2 events
 * before). An adapter that judged each append against the stored versions alone would accept 1, 8, 10
 * and 14 and refuse 2, 9, 11 and 13; one that let a refused append move the version would refuse 2.
 */
const BURST: readonly Planned[] = [
  { stream: 's', expected: 'no_stream', count: 1, then: { version: 1 } },
  { stream: 's', expected: 'no_stream', count: 1, then: { conflict: 1 } },
  { stream: 's', expected: 1, count: 2, then: { version: 3 } },
  { stream: 't', expected: 'no_stream', count: 1, then: { version: 1 } },
  { stream: 's', expected: 'any', count: 1, then: { version: 4 } },
  { stream: 's', expected: 2, count: 1, then: { conflict: 4 } },
  { stream: 'u', expected: 2, count: 1, then: { version: 3 } },
  { stream: 's', expected: 3, count: 1, then: { conflict: 4 } },
  { stream: 'u', expected: 2, count: 2, then: { conflict: 3 } },
  { stream: 's', expected: 'stream_exists', count: 2, then: { version: 6 } },
  { stream: 't', expected: 0, count: 1, then: { conflict: 1 } },
  { stream: 's', expected: 6, count: 1, then: { version: 7 } },
  { stream: 'u', expected: 'no_stream', count: 1, then: { conflict: 3 } },
  { stream: 't', expected: 1, count: 3, then: { version: 4 } },
  { stream: 's', expected: 0, count: 1, then: { conflict: 7 } },
  { stream: 'v', expected: 'stream_exists', count: 1, then: { conflict: 0 } },
  { stream: 'v', expected: 'any', count: 1, then: { version: 1 } },
];

// ---- many writers ----------------------------------------------------------------------------------

// ---- the tests -------------------------------------------------------------------------------------

type Noted = { type: 'Noted'; data: { n: number } };
const notedRegistry = (): EventRegistry<Noted> => new EventRegistry<Noted>({ Noted: {} });

export function groupCommitTests(ctx: SuiteContext): void {
  const it = ctx.it;

  describe('appends started together (group commit)', () => {
    it('close() waits for the appends made before it, on a store that has not been used yet; a second close() waits too', TIMEOUT, async () => {
      const store = await ctx.store();
      const appended = store.append('s', [{ type: 'Noted', data: { n: 1 } }, { type: 'Noted', data: { n: 2 } }]);
      const also = store.append('t', [{ type: 'Noted', data: { n: 3 } }]);
      let settled = 0;
      for (const p of [appended, also]) void p.then(() => settled++, () => settled++);
      const first = store.close();
      await store.close();
      // One turn of the event loop for the answers to travel (a store that writes synchronously has
      // written them already); a database round trip takes longer than that.
      await yieldToEventLoop();
      assert.equal(settled, 2, 'the second close() resolved before the appends made before it were written');
      await first;
      assert.equal((await appended).nextExpectedVersion, 2);
      assert.equal((await also).nextExpectedVersion, 1);
      // A store that can be opened again must hold them (one that cannot, memory, has only its results).
      if (ctx.harness.openAnother) {
        const reopened = await ctx.another(store);
        assert.deepEqual(
          (await collect(reopened.readAll())).map((e) => e.data),
          [{ n: 1 }, { n: 2 }, { n: 3 }],
        );
      }
    });

    it('a burst of appends with expected versions: each judged in call order against what the earlier ones left', TIMEOUT, async () => {
      const store = await ctx.store();
      const seed = await store.append('u', [
        { type: 'Seed', data: 1 },
        { type: 'Seed', data: 2 },
      ]);
      const outcomes = await Promise.allSettled(
        BURST.map(({ stream, expected, count }, index) =>
          store.append(
            stream,
            Array.from({ length: count }, (_, i) => ({ type: 'Burst', data: { index, i } })),
            { expectedVersion: expected },
          ),
        ),
      );

      const winners: AppendResult[] = [];
      BURST.forEach((planned, index) => {
        const what = `append ${index} (${planned.stream}, expected ${String(planned.expected)})`;
        const then = planned.then;
        if ('version' in then) {
          const result = succeeded(outcomes[index], what);
          assert.equal(result.nextExpectedVersion, then.version, `${what}: the stream's version after it`);
          assert.deepEqual(
            result.events.map((e) => [e.streamId, e.streamVersion, e.data]),
            Array.from({ length: planned.count }, (_, i) => [planned.stream, then.version - planned.count + i + 1, { index, i }]),
            `${what}: its events and their versions`,
          );
          winners.push(result);
        } else {
          const error = failed(outcomes[index], ErrorCode.Concurrency, what);
          assert.equal(error.streamId, planned.stream, `${what}: the conflict names the stream`);
          assert.equal(error.expectedVersion, planned.expected, `${what}: the conflict names the expected version`);
          assert.equal(error.actualVersion, then.conflict, `${what}: the conflict reports the version the earlier appends left`);
        }
      });

      // Positions follow call order: every accepted event comes after those of the appends called before.
      const positions = winners.flatMap((r) => r.events.map((e) => e.position));
      assert.ok((positions[0] as number) > seed.position, 'the burst comes after the seed');
      assertStrictlyIncreasing(positions, 'positions of the accepted appends, in call order');

      // The log holds exactly the winners' events, in call order, and every stream reads back 1..n.
      const all = await collect(store.readAll({ after: seed.position }));
      assert.deepEqual(all, winners.flatMap((r) => r.events), 'the log after the seed is exactly the accepted appends, as they returned them');
      for (const [stream, version] of [['s', 7], ['t', 4], ['u', 3], ['v', 1]] as const) {
        const events = await collect(store.readStream(stream));
        assert.deepEqual(events.map((e) => e.streamVersion), Array.from({ length: version }, (_, i) => i + 1), `${stream}: versions 1..n`);
        assert.equal(await store.streamVersion(stream), version, `${stream}: its version`);
      }
      assert.deepEqual(
        (await collect(store.readStream('s'))).map((e) => e.data),
        [{ index: 0, i: 0 }, { index: 2, i: 0 }, { index: 2, i: 1 }, { index: 4, i: 0 }, { index: 9, i: 0 }, { index: 9, i: 1 }, { index: 11, i: 0 }],
        "s holds the winners' events only",
      );
    });

    it('a burst with bad appends among good ones: each bad one fails alone with its own error, the others land whole', TIMEOUT, async () => {
      const store = await ctx.store({ registry: notedRegistry() });
      const id = (n: number): string => `0190b1d2-3c4d-7e5f-8a6b-${n.toString(16).padStart(12, '0')}`;
      const STORED = id(1);
      const seed = await store.append('seed', [{ type: 'Noted', data: { n: 0 }, id: STORED }]);
      const noted = (n: number, eventId?: string): NewEvent<Noted> => (eventId === undefined ? { type: 'Noted', data: { n } } : { type: 'Noted', data: { n }, id: eventId });
      const burst: { stream: string; events: NewEvent<Noted>[]; expected?: ExpectedVersion }[] = [
        /* 0 */ { stream: 'a', events: [noted(1, id(10)), noted(2, id(11))] },
        /* 1 */ { stream: 'b', events: [noted(3, id(20)), noted(4, STORED)] },
        /* 2 */ { stream: 'b', events: [noted(5)], expected: 'no_stream' },
        /* 3 */ { stream: 'a', events: [noted(6), { type: 'Mystery', data: {} } as unknown as NewEvent<Noted>] },
        /* 4 */ { stream: 'c', events: [noted(7, id(30)), noted(8), noted(9, id(30))] },
        /* 5 */ { stream: 'a', events: [noted(10)], expected: 2 },
        /* 6 */ { stream: 'd', events: [noted(11), noted(12, id(11))] },
        /* 7 */ { stream: 'c', events: [noted(13, id(20))], expected: 'no_stream' },
        /* 8 */ { stream: 'b', events: [noted(14), noted(15)], expected: 1 },
        /* 9 */ { stream: 'e', events: [noted(16, id(30))] },
      ];
      const outcomes = await Promise.allSettled(burst.map(({ stream, events, expected }) => store.append(stream, events, { expectedVersion: expected ?? 'any' })));

      const duplicate = (index: number, eventId: string, why: string): void => {
        const error = failed(outcomes[index], ErrorCode.DuplicateEventId, `append ${index} (${why})`);
        assert.equal(error.eventId, eventId, `append ${index} (${why}): the error names the id`);
      };
      duplicate(1, STORED, 'an id already stored');
      const unknown = failed(outcomes[3], ErrorCode.UnknownEventType, 'append 3 (a type the registry does not know)');
      assert.equal(unknown.eventType, 'Mystery');
      duplicate(4, id(30), 'an id twice in itself');
      duplicate(6, id(11), 'an id of an earlier append of the burst');

      // The good ones: versions as if the bad ones had never been called.
      const good: [number, string, number][] = [
        [0, 'a', 2],
        [2, 'b', 1],
        [5, 'a', 3],
        // Its id was in append 1, which was refused: it is free.
        [7, 'c', 1],
        [8, 'b', 3],
        // Its id was twice in append 4, which was refused.
        [9, 'e', 1],
      ];
      const winners: AppendResult[] = [];
      for (const [index, stream, version] of good) {
        const result = succeeded(outcomes[index], `append ${index} to ${stream}`);
        assert.equal(result.nextExpectedVersion, version, `append ${index} to ${stream}: the stream's version after it`);
        winners.push(result);
      }
      assertStrictlyIncreasing(
        winners.flatMap((r) => r.events.map((e) => e.position)),
        'positions of the accepted appends, in call order',
      );

      // Nothing of a refused append is stored; every accepted one is, whole.
      const all = await collect(store.readAll({ after: seed.position }));
      assert.deepEqual(all, winners.flatMap((r) => r.events), 'the log after the seed is exactly the accepted appends');
      assert.deepEqual(
        all.map((e) => e.data.n),
        [1, 2, 5, 10, 13, 14, 15, 16],
        'no event of a refused append was stored',
      );
      for (const [stream, version] of [['a', 3], ['b', 3], ['c', 1], ['d', 0], ['e', 1]] as const) {
        assert.equal(await store.streamVersion(stream), version, `${stream}: its version`);
      }
      assert.equal(await store.headPosition(), all[all.length - 1]!.position);
    });

  });
}
