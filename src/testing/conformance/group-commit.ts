import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { ErrorCode, isEskitError } from '../../core/errors.js';
import type { NewEvent, Recorded } from '../../core/event.js';
import { EventRegistry } from '../../core/registry.js';
import type { AppendResult, EventStore, ExpectedVersion } from '../../core/store.js';
import { assertStrictlyIncreasing, collect, yieldToEventLoop } from './context.js';
import type { SuiteContext } from './context.js';

const TIMEOUT = { timeout: 30_000 };

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

function explain(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = (error as { code?: unknown }).code;
  return `${error.name}${code === undefined ? '' : ` [${String(code)}]`}: ${error.message}`;
}

/** Whether a stream at version `actual` satisfies `expected`: the rule every adapter enforces. */
function satisfies(expected: ExpectedVersion, actual: number): boolean {
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

const WRITERS = 16;
const ATTEMPTS = 25;
const HOT_STREAMS = 3;

/** What each event of the many-writers test carries: which append wrote it, and its place in it. */
interface Tag {
  w: number;
  a: number;
  k: number;
  n: number;
}

interface Attempt {
  w: number;
  a: number;
  stream: string;
  expected: ExpectedVersion;
  count: number;
  /** A version the stream had reached, as the writer knew, before it called append. */
  known: number;
  /** Certain to conflict (a version older than one the writer saw, 'no_stream' on a stream it saw exist). */
  doomed: boolean;
  /** On the writer's own stream, which nobody else writes, the outcome is known in advance. */
  predicted?: { version: number } | { conflict: number };
  result?: AppendResult;
  error?: unknown;
}

/** A small seeded generator (mulberry32): every run makes the same choices (the interleaving still varies). */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function writer(store: EventStore, w: number, attempts: Attempt[]): Promise<void> {
  const rand = random(0x9e3779b9 ^ (w * 7919));
  const own = `own-${w}`;
  let ownVersion = 0;
  const known = new Map<string, number>();
  const saw = (stream: string, version: number): void => {
    if (version > (known.get(stream) ?? 0)) known.set(stream, version);
  };
  for (let a = 0; a < ATTEMPTS; a++) {
    const count = 1 + Math.floor(rand() * 3);
    let stream: string;
    let expected: ExpectedVersion;
    let doomed = false;
    let predicted: Attempt['predicted'];
    const pick = rand();
    if (a === 0) {
      // Every writer starts on its own stream: half of them with a conflict on purpose.
      stream = own;
      expected = w % 2 === 0 ? 'stream_exists' : 'no_stream';
      predicted = w % 2 === 0 ? { conflict: 0 } : { version: count };
    } else if (pick < 0.6) {
      stream = `hot-${Math.floor(rand() * HOT_STREAMS)}`;
      const mode = rand();
      if (mode < 0.3) {
        expected = 'any';
      } else if (mode < 0.65) {
        // The version just read: another writer may get there first.
        expected = await store.streamVersion(stream);
        saw(stream, expected);
      } else if (mode < 0.75) {
        // A version older than the one just read: a conflict on purpose.
        const version = await store.streamVersion(stream);
        saw(stream, version);
        expected = version > 0 ? version - 1 : 'stream_exists';
        doomed = version > 0;
      } else if (mode < 0.87) {
        expected = 'no_stream';
        doomed = (known.get(stream) ?? 0) > 0;
      } else {
        expected = 'stream_exists';
      }
    } else {
      stream = own;
      const mode = rand();
      if (mode < 0.12) expected = 'no_stream';
      else if (mode < 0.24) expected = 'stream_exists';
      else if (mode < 0.36) expected = 'any';
      else if (mode < 0.48 && ownVersion > 0) expected = ownVersion - 1;
      else expected = ownVersion;
      predicted = satisfies(expected, ownVersion) ? { version: ownVersion + count } : { conflict: ownVersion };
      doomed = 'conflict' in predicted;
    }
    const attempt: Attempt = { w, a, stream, expected, count, known: known.get(stream) ?? 0, doomed, predicted };
    attempts.push(attempt);
    const events = Array.from({ length: count }, (_, k) => ({ type: 'Tagged', data: { w, a, k, n: count } satisfies Tag }));
    try {
      attempt.result = await store.append(stream, events, { expectedVersion: expected });
      saw(stream, attempt.result.nextExpectedVersion);
      if (stream === own) ownVersion = attempt.result.nextExpectedVersion;
    } catch (error) {
      attempt.error = error;
      const actual = (error as { actualVersion?: unknown }).actualVersion;
      if (isEskitError(error, ErrorCode.Concurrency) && typeof actual === 'number') saw(stream, actual);
    }
  }
}

// ---- the tests -------------------------------------------------------------------------------------

type Noted = { type: 'Noted'; data: { n: number } };
const notedRegistry = (): EventRegistry<Noted> => new EventRegistry<Noted>({ Noted: {} });

export function groupCommitTests(ctx: SuiteContext): void {
  const it = ctx.it;
  const hasAnother = ctx.harness.openAnother !== undefined;

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

    it(`${WRITERS} writers append to shared and own streams with every kind of expected version while a reader tails readAll`, TIMEOUT, async () => {
      const store = await ctx.store({ pageSize: 50 });
      const reader = hasAnother ? await ctx.another(store) : store;
      const attempts: Attempt[] = [];
      let writersDone = false;
      const writing = Promise.all(Array.from({ length: WRITERS }, (_, w) => writer(store, w, attempts))).finally(() => {
        writersDone = true;
      });

      const seen: Recorded[] = [];
      const tail = (async () => {
        let last = 0;
        for (;;) {
          // Sampled before the read: a read that starts after every append returned and finds nothing ends the tail.
          const done = writersDone;
          let got = 0;
          for await (const event of reader.readAll({ after: last })) {
            assert.ok(event.position > last, `position ${event.position} came after ${last}`);
            last = event.position;
            seen.push(event);
            got++;
          }
          if (got > 0) continue;
          if (done) return;
          await yieldToEventLoop();
        }
      })();
      await Promise.all([writing, tail]);

      // Every refusal is a version conflict, nothing else.
      for (const attempt of attempts) {
        if (attempt.error !== undefined) {
          assert.ok(
            isEskitError(attempt.error, ErrorCode.Concurrency),
            `writer ${attempt.w} append ${attempt.a} failed with something other than a conflict: ${explain(attempt.error)}`,
          );
        }
      }

      assertStrictlyIncreasing(seen.map((e) => e.position), 'positions seen by the tailing reader');
      assert.equal(new Set(seen.map((e) => e.id)).size, seen.length, 'no event was seen twice');

      // The events each append wrote, as the tail saw them, with their index in the tail.
      const byAppend = new Map<string, { event: Recorded; at: number }[]>();
      seen.forEach((event, at) => {
        const { w, a } = event.data as Tag;
        const key = `${w}/${a}`;
        const list = byAppend.get(key) ?? [];
        list.push({ event, at });
        byAppend.set(key, list);
      });

      // Per stream, the versions each accepted append reached (with 0): a conflict can only report one of them.
      const reached = new Map<string, Set<number>>();
      for (const attempt of attempts) {
        if (attempt.result === undefined) continue;
        const set = reached.get(attempt.stream) ?? new Set([0]);
        set.add(attempt.result.nextExpectedVersion);
        reached.set(attempt.stream, set);
      }

      let conflicts = 0;
      let hotWins = 0;
      for (const attempt of attempts) {
        const what = `writer ${attempt.w} append ${attempt.a} (${attempt.stream}, expected ${String(attempt.expected)}, ${attempt.count} events)`;
        const found = byAppend.get(`${attempt.w}/${attempt.a}`) ?? [];
        byAppend.delete(`${attempt.w}/${attempt.a}`);
        if (attempt.result !== undefined) {
          const result = attempt.result;
          if (attempt.stream.startsWith('hot-')) hotWins++;
          assert.ok(!attempt.doomed, `${what} succeeded, but it was certain to conflict`);
          if (attempt.predicted) assert.deepEqual({ version: result.nextExpectedVersion }, attempt.predicted, `${what}: its own stream's outcome`);
          assert.equal(found.length, attempt.count, `${what}: the reader saw ${found.length} of its ${attempt.count} events`);
          assert.deepEqual(
            found.map(({ event }) => [event.streamId, event.streamVersion, (event.data as Tag).k, (event.data as Tag).n]),
            Array.from({ length: attempt.count }, (_, k) => [attempt.stream, result.nextExpectedVersion - attempt.count + k + 1, k, attempt.count]),
            `${what}: its events, in order, with the versions up to its nextExpectedVersion ${result.nextExpectedVersion}`,
          );
          const first = (found[0] as { at: number }).at;
          assert.deepEqual(
            found.map(({ at }) => at),
            Array.from({ length: attempt.count }, (_, k) => first + k),
            `${what}: its events are adjacent in the log`,
          );
          assert.deepEqual(
            found.map(({ event }) => [event.id, event.position]),
            result.events.map((e) => [e.id, e.position]),
            `${what}: the reader saw the ids and positions the append returned`,
          );
          assert.equal(result.position, result.events[result.events.length - 1]?.position);
        } else {
          conflicts++;
          assert.equal(found.length, 0, `${what} failed, yet ${found.length} of its events were stored`);
          const error = attempt.error as { streamId?: unknown; actualVersion?: unknown };
          assert.equal(error.streamId, attempt.stream, `${what}: the conflict names the stream`);
          const actual = error.actualVersion;
          assert.ok(typeof actual === 'number', `${what}: the conflict reports the actual version`);
          assert.ok(!satisfies(attempt.expected, actual), `${what}: a conflict with actual version ${actual}, which satisfies it`);
          assert.ok(actual >= attempt.known, `${what}: actual version ${actual} is below ${attempt.known}, which the writer had seen`);
          assert.ok(
            (reached.get(attempt.stream) ?? new Set([0])).has(actual),
            `${what}: actual version ${actual} is not a version any accepted append left the stream at`,
          );
          if (attempt.predicted) assert.deepEqual({ conflict: actual }, attempt.predicted, `${what}: its own stream's outcome`);
        }
      }
      assert.deepEqual([...byAppend.keys()], [], 'events of appends that did not succeed were read');

      // Per stream, versions 1..n in position order, n being its version now.
      const streams = new Map<string, number[]>();
      for (const event of seen) {
        const list = streams.get(event.streamId) ?? [];
        list.push(event.streamVersion);
        streams.set(event.streamId, list);
      }
      for (const [stream, versions] of streams) {
        assert.deepEqual(versions, Array.from({ length: versions.length }, (_, i) => i + 1), `${stream}: versions 1..n in position order`);
        assert.equal(await store.streamVersion(stream), versions.length, `${stream}: its version`);
      }

      const all = await collect(store.readAll());
      assert.deepEqual(all.map((e) => [e.id, e.position]), seen.map((e) => [e.id, e.position]), 'a full read matches the tail');
      // The test must have raced: writers conflicted on purpose and by chance, and shared streams moved.
      assert.ok(conflicts >= WRITERS / 2, `only ${conflicts} conflicts`);
      assert.ok(hotWins >= WRITERS, `only ${hotWins} appends to the shared streams succeeded`);
      assert.equal(attempts.length, WRITERS * ATTEMPTS);
    });
  });
}
