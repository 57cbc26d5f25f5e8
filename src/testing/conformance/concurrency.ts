import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { ErrorCode, isEskitError } from '../../core/errors.js';
import type { Recorded } from '../../core/event.js';
import type { AppendResult, EventStore, ExpectedVersion } from '../../core/store.js';
import { assertStrictlyIncreasing, collect, yieldToEventLoop } from './context.js';
import type { SuiteContext } from './context.js';

const RACERS = 10;
const TIMEOUT = { timeout: 30_000 };

/**
 * Starts RACERS appends at once with the same expected version, each on `handles[i % n]`, and checks
 * that exactly one wins and every loser sees the conflict with the winner's version.
 */
async function race(handles: EventStore[], streamId: string, expected: ExpectedVersion, eventsPerAppend: number, before: number): Promise<void> {
  const outcomes = await Promise.allSettled(
    Array.from({ length: RACERS }, (_, racer) =>
      (handles[racer % handles.length] as EventStore).append(
        streamId,
        Array.from({ length: eventsPerAppend }, (_, i) => ({ type: 'Raced', data: { racer, i } })),
        { expectedVersion: expected },
      ),
    ),
  );
  const winners = outcomes.filter((o): o is PromiseFulfilledResult<AppendResult> => o.status === 'fulfilled');
  const losers = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
  assert.equal(winners.length, 1, `exactly one of ${RACERS} racing appends wins`);
  const winner = winners[0]!.value;
  const after = before + eventsPerAppend;
  assert.equal(winner.nextExpectedVersion, after);
  for (const loser of losers) {
    assert.ok(isEskitError(loser.reason, ErrorCode.Concurrency), `a loser fails with ESKIT_CONCURRENCY, got ${String(loser.reason)}`);
    assert.equal((loser.reason as { actualVersion?: unknown }).actualVersion, after, 'a loser learns the real version');
  }
  const stored = await collect(handles[0]!.readStream(streamId));
  assert.equal(stored.length, after);
  const racer = (winner.events[0]!.data as { racer: number }).racer;
  assert.deepEqual(
    stored.slice(before).map((e) => e.data),
    Array.from({ length: eventsPerAppend }, (_, i) => ({ racer, i })),
    "only the winner's events were written",
  );
  assert.deepEqual(stored.slice(before), winner.events);
}

export function concurrencyTests(ctx: SuiteContext): void {
  const it = ctx.it;
  const hasAnother = ctx.harness.openAnother !== undefined;
  // Cross-handle tests exist only for adapters with independent handles (not for memory).
  const withAnother = ctx.harness.openAnother ? it : () => undefined;

  describe('concurrent appends', () => {
    it(`${RACERS} appenders race with 'no_stream' on a new stream: one wins`, TIMEOUT, async () => {
      const store = await ctx.store();
      await race([store], 'race', 'no_stream', 1, 0);
      assert.equal(await store.streamVersion('race'), 1);
    });

    it(`${RACERS} appenders race with 0 on a new stream: one wins`, TIMEOUT, async () => {
      const store = await ctx.store();
      await race([store], 'race', 0, 1, 0);
      assert.equal(await store.streamVersion('race'), 1);
    });

    it(`${RACERS} appenders of 2 events race with the same version on an existing stream: one wins`, TIMEOUT, async () => {
      const store = await ctx.store();
      await store.append('race', [{ type: 'Seed', data: 1 }, { type: 'Seed', data: 2 }, { type: 'Seed', data: 3 }]);
      await race([store], 'race', 3, 2, 3);
      assert.equal(await store.streamVersion('race'), 5);
    });

    withAnother(`${RACERS} appenders race across independent handles: one wins`, TIMEOUT, async () => {
      const store = await ctx.store();
      const handles: EventStore[] = [store];
      for (let i = 1; i < RACERS; i++) handles.push(await ctx.another(store));
      await race(handles, 'race-new', 'no_stream', 1, 0);
      await store.append('race-old', [{ type: 'Seed', data: 1 }, { type: 'Seed', data: 2 }]);
      await race(handles, 'race-old', 2, 3, 2);
      for (const handle of handles) {
        assert.equal(await handle.streamVersion('race-new'), 1);
        assert.equal(await handle.streamVersion('race-old'), 5);
      }
    });

    withAnother('an event written through one handle is visible through another', {}, async () => {
      const store = await ctx.store();
      const other = await ctx.another(store);
      const written = await store.append('s', [{ type: 'A', data: { v: 1 } }]);
      assert.deepEqual(await collect(other.readStream('s')), written.events);
      assert.equal(await other.headPosition(), written.position);
      await expectConflictFrom(other, 's');
    });

    it(`${RACERS} concurrent 'any' appends to one stream all land, each batch contiguous`, TIMEOUT, async () => {
      const store = await ctx.store();
      const handles = [store];
      if (hasAnother) handles.push(await ctx.another(store));
      const results = await Promise.all(
        Array.from({ length: RACERS }, (_, racer) =>
          handles[racer % handles.length]!.append('shared', [
            { type: 'Any', data: { racer, i: 0 } },
            { type: 'Any', data: { racer, i: 1 } },
          ]),
        ),
      );
      assert.deepEqual(
        results.map((r) => r.nextExpectedVersion).sort((a, b) => a - b),
        Array.from({ length: RACERS }, (_, i) => 2 * (i + 1)),
      );
      const stored = await collect(store.readStream('shared'));
      assert.deepEqual(stored.map((e) => e.streamVersion), Array.from({ length: 2 * RACERS }, (_, i) => i + 1));
      for (let v = 0; v < stored.length; v += 2) {
        const [a, b] = [stored[v]!.data, stored[v + 1]!.data] as { racer: number; i: number }[];
        assert.deepEqual([a!.i, b!.i, b!.racer], [0, 1, a!.racer], 'the two events of one append are adjacent');
      }
      assertStrictlyIncreasing(stored.map((e) => e.position), 'positions within a stream');
    });

    it('8 writers append small batches to their own streams while a reader tails readAll: every event seen once, in order', TIMEOUT, async () => {
      const WRITERS = 8;
      const BATCHES = 30;
      const store = await ctx.store({ pageSize: 7 });
      const reader = hasAnother ? await ctx.another(store) : store;
      const sizeOf = (writer: number, batch: number): number => ((writer + batch) % 3) + 1;
      let total = 0;
      for (let w = 0; w < WRITERS; w++) for (let b = 0; b < BATCHES; b++) total += sizeOf(w, b);

      let writerError: unknown;
      const writers = Array.from({ length: WRITERS }, async (_, w) => {
        try {
          let version = 0;
          for (let b = 0; b < BATCHES; b++) {
            const events = Array.from({ length: sizeOf(w, b) }, (_, i) => ({ type: `W${w % 2}`, data: { w, b, i } }));
            const result = await store.append(`writer-${w}`, events, { expectedVersion: version });
            version = result.nextExpectedVersion;
          }
        } catch (error) {
          writerError ??= error;
          throw error;
        }
      });

      let writersDone = false;
      void Promise.all(writers).then(
        () => (writersDone = true),
        () => undefined,
      );

      const seen: Recorded[] = [];
      const tail = (async () => {
        // Once every append has returned, its events must become visible soon; a reader that is still
        // missing some by then skipped them.
        let settleDeadline: number | undefined;
        let last = 0;
        while (seen.length < total && writerError === undefined) {
          if (writersDone) settleDeadline ??= Date.now() + 5_000;
          assert.ok(
            settleDeadline === undefined || Date.now() < settleDeadline,
            `the tailing reader saw ${seen.length} of ${total} events; the rest were skipped (read positions up to ${last})`,
          );
          let got = 0;
          for await (const event of reader.readAll({ after: last })) {
            assert.ok(event.position > last, `position ${event.position} came after ${last}`);
            last = event.position;
            seen.push(event);
            got++;
          }
          if (got === 0) await yieldToEventLoop();
        }
      })();

      await Promise.all([...writers, tail]);
      assert.equal(seen.length, total, 'the reader saw every event');
      assert.equal(new Set(seen.map((e) => e.id)).size, total, 'no event was seen twice');
      assertStrictlyIncreasing(seen.map((e) => e.position), 'positions seen by the tailing reader');

      const versions = new Map<string, number>();
      for (const event of seen) {
        const expected = (versions.get(event.streamId) ?? 0) + 1;
        assert.equal(event.streamVersion, expected, `${event.streamId} versions arrive consecutively`);
        versions.set(event.streamId, expected);
      }
      assert.equal(versions.size, WRITERS);

      const all = await collect(store.readAll());
      assert.deepEqual(all.map((e) => [e.id, e.position]), seen.map((e) => [e.id, e.position]), 'a full read matches the tail');
      assert.equal(await store.headPosition(), seen[seen.length - 1]!.position);
    });
  });
}

async function expectConflictFrom(store: EventStore, streamId: string): Promise<void> {
  await assert.rejects(
    store.append(streamId, [{ type: 'A', data: 2 }], { expectedVersion: 'no_stream' }),
    (error: unknown) => isEskitError(error, ErrorCode.Concurrency) && (error as { actualVersion?: unknown }).actualVersion === 1,
  );
}
