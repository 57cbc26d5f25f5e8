import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { ErrorCode, isEskitError } from '../../core/errors.js';
import type { Recorded } from '../../core/event.js';
import type { AppendResult, EventStore, ExpectedVersion } from '../../core/store.js';
import { assertStrictlyIncreasing, collect, yieldToEventLoop } from './context.js';
import type { SuiteContext } from './context.js';
import { explain, satisfies, TIMEOUT } from './group-commit.js';

/*
 * The concurrent variant of the gap test: many writers, shared and own streams, every kind of expected
 * version and conflicts on purpose, while a reader tails the log. Whether or not an adapter groups the
 * appends, every committed event is read once, in order, and every refused append is absent.
 */

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


export function concurrentWriterTests(ctx: SuiteContext): void {
  const it = ctx.it;
  const hasAnother = ctx.harness.openAnother !== undefined;

  describe('concurrent writers and a tailing reader', () => {
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
