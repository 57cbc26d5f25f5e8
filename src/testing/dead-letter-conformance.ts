import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { v7 as uuidv7 } from 'uuid';
import type { CheckpointStore, FencedWriteOptions } from '../core/checkpoint.js';
import type { DeadLetter, DeadLetterStore, FailedAttempt, NewDeadLetter } from '../core/dead-letter.js';
import { ErrorCode, isEskitError } from '../core/errors.js';
import { assertFenced, MALFORMED_FENCES } from './fences.js';

/** The stores under test, on fresh, empty storage. */
export interface DeadLetterStores {
  deadLetters: DeadLetterStore;
  /**
   * A checkpoint store on the same storage, whose checkpoints the dead-letter store's fences name: the
   * tests claim a checkpoint with a newer token through it and expect a stale write to be refused.
   */
  checkpoints: CheckpointStore;
  /** Releases what `create` opened (connections, files, schemas). */
  close(): Promise<void>;
}

/** What an adapter hands `deadLetterStoreConformance`. */
export interface DeadLetterConformanceHarness {
  /** Shown in test names, e.g. 'memory', 'sqlite', 'postgres'. */
  name: string;
  /** Fresh, empty stores for one test; called once per test and closed when it ends. */
  create(): Promise<DeadLetterStores>;
  /** Fails a test that runs longer than this (a hung query must fail, not stall CI). Default 60 000. */
  testTimeoutMs?: number;
}

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
/** Adapters may take times from the database's clock: allow for a little skew and rounding. */
const CLOCK_SLACK_MS = 1000;

let sequence = 0;

/** A valid letter; `overrides` replace fields (also with invalid values, for the bad-input tests). */
function letter(overrides: Partial<Record<keyof NewDeadLetter, unknown>> = {}): NewDeadLetter {
  sequence += 1;
  return {
    source: 'mailer',
    stage: 'execute',
    key: `customer-${sequence}`,
    payload: { to: `user${sequence}@example.com`, n: sequence },
    eventId: uuidv7(),
    eventType: 'OrderPlaced',
    eventPosition: sequence,
    streamId: `order-${sequence}`,
    attempts: [{ at: new Date(1_700_000_000_000 + sequence), error: `Error: boom ${sequence}` }],
    ...overrides,
  } as NewDeadLetter;
}

async function rejectsWith(promise: () => Promise<unknown>, code: string, message?: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isEskitError(error, code), `expected ${code}, got ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`);
    return true;
  }, message);
}

const ids = (letters: DeadLetter[]): string[] => letters.map((l) => l.id);

const fence = (checkpoint: string, fencingToken: number): FencedWriteOptions => ({ fence: { checkpoint, fencingToken } });

/** Waits (for the clock, not a guessed time) until a change made now is stamped later than `time`. */
async function clockPast(time: Date): Promise<void> {
  while (Date.now() <= time.getTime() + 2) await new Promise((resolve) => setTimeout(resolve, 1));
}

function assertTimeBetween(date: unknown, before: number, after: number, what: string): void {
  assert.ok(date instanceof Date, `${what} is a Date`);
  const time = date.getTime();
  assert.ok(time >= before - CLOCK_SLACK_MS && time <= after + CLOCK_SLACK_MS, `${what} ${date.toISOString()} is the time of the call`);
}

/**
 * Registers the DeadLetterStore conformance tests (node:test `describe`/`it`) for one adapter: the
 * queue's operations, and the fenced `add` and `settleRedrive` of a leader (a stale leader changes
 * nothing once a newer token has claimed its checkpoint). The CompletionStore has its own suite,
 * `completionStoreConformance`. Every adapter in eskit runs it, and so can third-party ones:
 *
 * ```ts
 * deadLetterStoreConformance({
 *   name: 'my-adapter',
 *   create: async () => {
 *     const db = await freshDatabase();
 *     return { deadLetters: new MyDeadLetters(db), checkpoints: new MyCheckpoints(db), close: () => db.drop() };
 *   },
 * });
 * ```
 */
export function deadLetterStoreConformance(harness: DeadLetterConformanceHarness): void {
  const test = (name: string, fn: (stores: DeadLetterStores) => Promise<void>): void => {
    it(name, { timeout: harness.testTimeoutMs ?? 60_000 }, async () => {
      const stores = await harness.create();
      try {
        await fn(stores);
      } finally {
        await stores.close();
      }
    });
  };

  describe(`DeadLetterStore conformance: ${harness.name}`, () => {
    test('add returns the letter with a UUIDv7 id, status dead and timestamps; get returns the same', async ({ deadLetters }) => {
      const input = letter();
      const before = Date.now();
      const added = await deadLetters.add(input);
      const after = Date.now();
      assert.match(added.id, UUID_V7);
      assert.equal(added.status, 'dead');
      assertTimeBetween(added.createdAt, before, after, 'createdAt');
      assert.equal(added.updatedAt.getTime(), added.createdAt.getTime(), 'updatedAt equals createdAt on add');
      assert.deepEqual(added, { ...input, id: added.id, status: 'dead', createdAt: added.createdAt, updatedAt: added.updatedAt });
      assert.deepEqual(await deadLetters.get(added.id), added);
      const second = await deadLetters.add(letter());
      assert.notEqual(second.id, added.id);
      assert.ok(second.id > added.id, 'a later letter has a greater id');
      assert.equal(await deadLetters.count(), 2);
    });

    test('attempts round-trip exactly: Dates to the millisecond and error text', async ({ deadLetters }) => {
      const attempts: FailedAttempt[] = [
        { at: new Date(1_700_000_000_123), error: 'Error: first\n    at handler (app.ts:1:2)' },
        { at: new Date(1_700_000_000_124), error: 'TypeError: «ünïcödé» 💥 "quoted" \\ back\tslash \u2028 ok' },
        { at: new Date(0), error: '' },
        { at: new Date(Date.UTC(2100, 0, 1, 23, 59, 59, 999)), error: '{"json":"as text"}' },
      ];
      const added = await deadLetters.add(letter({ attempts }));
      assert.deepEqual(added.attempts, attempts);
      const got = await deadLetters.get(added.id);
      assert.deepEqual(got?.attempts, attempts);
      assert.ok(got?.attempts.every((a) => a.at instanceof Date));
      assert.deepEqual((await deadLetters.add(letter({ attempts: [] }))).attempts, [], 'no attempts is allowed');
    });

    test('payload JSON round-trips (nested, unicode, null, scalars) and callers get their own copies', async ({ deadLetters }) => {
      const payloads: unknown[] = [
        { a: { b: { c: [1, 2, { d: [true, false, null] }] } }, empty: {}, list: [], num: -12.5e-3, big: 9_007_199_254_740_991 },
        { text: 'héllo wörld — 日本語 — 🎉👩‍👩‍👧 \u2028\u2029 — "quotes" \\ backslash', 'ключ с пробелом': 'значение' },
        null,
        'just a string',
        42,
        false,
        [1, 'two', { three: 3 }],
      ];
      for (const payload of payloads) {
        const added = await deadLetters.add(letter({ payload }));
        assert.deepEqual(added.payload, payload);
        assert.deepEqual((await deadLetters.get(added.id))?.payload, payload);
      }
      const payload = { nested: { value: 1 } };
      const added = await deadLetters.add(letter({ payload }));
      payload.nested.value = 2;
      (added.payload as { nested: { value: number } }).nested.value = 3;
      added.attempts.push({ at: new Date(), error: 'changed by the caller' });
      const got = await deadLetters.get(added.id);
      assert.deepEqual(got?.payload, { nested: { value: 1 } }, 'mutating the input or the result does not change the stored letter');
      assert.equal(got?.attempts.length, 1);
    });

    test("'\\u0000' in a text either round trips or is refused with a typed error, storing nothing", async ({ deadLetters }) => {
      // PostgreSQL cannot store NUL in jsonb or text, so an adapter may refuse it; it must not store part
      // of a letter or leak a driver error.
      const nul = 'a\u0000b';
      const cases: Array<[string, () => Promise<unknown>, () => Promise<unknown>]> = [];
      const fields: Array<[string, Partial<Record<keyof NewDeadLetter, unknown>>]> = [
        ['payload', { payload: { text: nul } }],
        ['payload key', { payload: { [nul]: 1 } }],
        ['attempt error', { attempts: [{ at: new Date(1), error: nul }] }],
        ['source', { source: nul }],
        ['key', { key: nul }],
        ['eventType', { eventType: nul }],
        ['streamId', { streamId: nul }],
      ];
      for (const [name, overrides] of fields) {
        const input = letter(overrides);
        cases.push([
          name,
          async () => {
            const added = await deadLetters.add(input);
            assert.deepEqual(await deadLetters.get(added.id), { ...input, id: added.id, status: 'dead', createdAt: added.createdAt, updatedAt: added.updatedAt });
            assert.equal(await deadLetters.discard({ id: added.id }), 1);
          },
          async () => assert.equal(await deadLetters.count(), 0, `a refused NUL in ${name} stored nothing`),
        ]);
      }
      for (const [name, attempt, unchanged] of cases) {
        let refused: unknown;
        try {
          await attempt();
        } catch (error) {
          if (error instanceof assert.AssertionError) throw error;
          refused = error;
        }
        if (refused !== undefined) {
          assert.ok(
            isEskitError(refused, ErrorCode.Serialization) || isEskitError(refused, ErrorCode.InvalidArgument),
            `NUL in ${name}: refused with ${String(refused)}, expected ESKIT_SERIALIZATION or ESKIT_INVALID_ARGUMENT`,
          );
          await unchanged();
        }
      }
    });

    test('list is oldest first, filtered by source and status, with limit and afterId paging', async ({ deadLetters }) => {
      const added: DeadLetter[] = [];
      for (let i = 0; i < 7; i++) added.push(await deadLetters.add(letter({ source: i % 3 === 2 ? 'billing' : 'mailer' })));
      const mailer = added.filter((l) => l.source === 'mailer');
      const billing = added.filter((l) => l.source === 'billing');
      assert.deepEqual(ids(await deadLetters.list()), ids(added));
      assert.deepEqual(await deadLetters.list(), added, 'list returns the letters as add did');
      assert.deepEqual(ids(await deadLetters.list({ source: 'mailer' })), ids(mailer));
      assert.deepEqual(ids(await deadLetters.list({ source: 'billing' })), ids(billing));
      assert.deepEqual(await deadLetters.list({ source: 'nobody' }), []);

      const redriven = [mailer[1], mailer[3], billing[0]] as DeadLetter[];
      for (const l of redriven) assert.equal(await deadLetters.redrive({ id: l.id }), 1);
      assert.deepEqual(ids(await deadLetters.list({ status: 'redrive' })), ids(added.filter((l) => redriven.includes(l))));
      assert.deepEqual(ids(await deadLetters.list({ status: 'dead' })), ids(added.filter((l) => !redriven.includes(l))));
      assert.deepEqual(ids(await deadLetters.list({ source: 'mailer', status: 'redrive' })), ids([mailer[1], mailer[3]] as DeadLetter[]));
      assert.deepEqual(ids(await deadLetters.list({ source: 'billing', status: 'dead' })), ids(billing.slice(1)));

      assert.deepEqual(ids(await deadLetters.list({ limit: 2 })), ids(added.slice(0, 2)));
      assert.deepEqual(ids(await deadLetters.list({ limit: 1000 })), ids(added));
      // Paging by afterId visits every letter once, in order.
      const paged: string[] = [];
      let page = await deadLetters.list({ limit: 3 });
      for (let pages = 1; page.length > 0; pages++) {
        // Bounded: an afterId that returned its own letter again would page forever.
        assert.ok(pages <= 3 && page.length <= 3, 'seven letters take three pages of three');
        paged.push(...ids(page));
        page = await deadLetters.list({ limit: 3, afterId: page[page.length - 1]?.id });
      }
      assert.deepEqual(paged, ids(added));
      assert.deepEqual(ids(await deadLetters.list({ afterId: added[2]?.id })), ids(added.slice(3)));
      assert.deepEqual(ids(await deadLetters.list({ source: 'mailer', afterId: mailer[0]?.id, limit: 2 })), ids(mailer.slice(1, 3)));
      assert.deepEqual(ids(await deadLetters.list({ source: 'mailer', status: 'dead', afterId: mailer[0]?.id })), ids([mailer[2], mailer[4]] as DeadLetter[]));
      assert.deepEqual(await deadLetters.list({ afterId: added[6]?.id }), []);
      // afterId need not be a stored letter: ids sort by creation time.
      assert.deepEqual(ids(await deadLetters.list({ afterId: '00000000-0000-7000-8000-000000000000' })), ids(added));
      assert.deepEqual(await deadLetters.list({ afterId: 'ffffffff-ffff-7fff-bfff-ffffffffffff' }), []);
    });

    test('list returns 100 letters unless a limit is given', async ({ deadLetters }) => {
      for (let i = 0; i < 101; i++) await deadLetters.add(letter({ source: 'bulk' }));
      const first = await deadLetters.list();
      assert.equal(first.length, 100);
      const rest = await deadLetters.list({ afterId: first[99]?.id });
      assert.equal(rest.length, 1);
      assert.equal((await deadLetters.list({ limit: 101 })).length, 101);
    });

    test('count, with and without filters', async ({ deadLetters }) => {
      assert.equal(await deadLetters.count(), 0);
      const a1 = await deadLetters.add(letter({ source: 'a' }));
      await deadLetters.add(letter({ source: 'a' }));
      await deadLetters.add(letter({ source: 'a' }));
      await deadLetters.add(letter({ source: 'b' }));
      await deadLetters.redrive({ id: a1.id });
      assert.equal(await deadLetters.count(), 4);
      assert.equal(await deadLetters.count({}), 4);
      assert.equal(await deadLetters.count({ source: 'a' }), 3);
      assert.equal(await deadLetters.count({ source: 'b' }), 1);
      assert.equal(await deadLetters.count({ source: 'c' }), 0);
      assert.equal(await deadLetters.count({ status: 'dead' }), 3);
      assert.equal(await deadLetters.count({ status: 'redrive' }), 1);
      assert.equal(await deadLetters.count({ source: 'a', status: 'dead' }), 2);
      assert.equal(await deadLetters.count({ source: 'b', status: 'redrive' }), 0);
    });

    test('get of an unknown id is undefined', async ({ deadLetters }) => {
      assert.equal(await deadLetters.get(uuidv7()), undefined);
      const added = await deadLetters.add(letter());
      assert.equal(await deadLetters.get(uuidv7()), undefined);
      assert.deepEqual(await deadLetters.get(added.id.toUpperCase()), added, 'ids are matched whatever their case');
    });

    test('redrive by id and by source marks dead letters and counts only those it changed', async ({ deadLetters }) => {
      const a1 = await deadLetters.add(letter({ source: 'a' }));
      const a2 = await deadLetters.add(letter({ source: 'a' }));
      const a3 = await deadLetters.add(letter({ source: 'a' }));
      const b1 = await deadLetters.add(letter({ source: 'b' }));
      await clockPast(b1.createdAt);
      const before = Date.now();
      assert.equal(await deadLetters.redrive({ id: a1.id }), 1);
      const after = Date.now();
      const redriven = await deadLetters.get(a1.id);
      assert.equal(redriven?.status, 'redrive');
      assertTimeBetween(redriven?.updatedAt, before, after, 'updatedAt after redrive');
      assert.ok((redriven?.updatedAt.getTime() ?? 0) > a1.createdAt.getTime(), 'redrive moves updatedAt');
      assert.deepEqual({ ...redriven, status: 'dead', updatedAt: a1.updatedAt }, a1, 'redrive changes only status and updatedAt');
      assert.equal(await deadLetters.redrive({ id: a1.id }), 0, 'a letter already in redrive is not counted again');
      assert.equal(await deadLetters.redrive({ id: uuidv7() }), 0, 'an unknown id changes nothing');
      assert.equal(await deadLetters.redrive({ source: 'a' }), 2, 'by source: only the letters still dead');
      assert.deepEqual(
        (await deadLetters.list({ source: 'a' })).map((l) => [l.id, l.status]),
        [a1, a2, a3].map((l) => [l.id, 'redrive']),
      );
      assert.equal((await deadLetters.get(b1.id))?.status, 'dead', 'other sources are untouched');
      assert.equal(await deadLetters.redrive({ source: 'a' }), 0);
      assert.equal(await deadLetters.redrive({ source: 'nobody' }), 0);
      assert.equal(await deadLetters.redrive({ source: 'b' }), 1);
    });

    test('settleRedrive ok removes the letter; it changes nothing for a letter not in redrive', async ({ deadLetters }) => {
      const a = await deadLetters.add(letter());
      const b = await deadLetters.add(letter());
      await deadLetters.redrive({ id: a.id });
      await deadLetters.settleRedrive(a.id, { ok: true });
      assert.equal(await deadLetters.get(a.id), undefined);
      assert.deepEqual(ids(await deadLetters.list()), [b.id]);
      await deadLetters.settleRedrive(b.id, { ok: true });
      assert.deepEqual(await deadLetters.get(b.id), b, 'a dead letter is not settled (only a redrive is)');
      await deadLetters.settleRedrive(a.id, { ok: true });
      await deadLetters.settleRedrive(uuidv7(), { ok: true });
      assert.equal(await deadLetters.count(), 1);
    });

    test('settleRedrive failure puts the letter back to dead with the new attempts appended', async ({ deadLetters }) => {
      const first: FailedAttempt[] = [
        { at: new Date(1_700_000_000_001), error: 'Error: one' },
        { at: new Date(1_700_000_000_002), error: 'Error: two' },
      ];
      const added = await deadLetters.add(letter({ attempts: first }));
      const other = await deadLetters.add(letter());
      await deadLetters.redrive({ source: 'mailer' });
      const again: FailedAttempt[] = [{ at: new Date(1_700_000_100_003), error: 'Error: three — still 💥' }];
      const redriven = await deadLetters.get(added.id);
      await clockPast(redriven?.updatedAt ?? new Date());
      const before = Date.now();
      await deadLetters.settleRedrive(added.id, { ok: false, attempts: again });
      const after = Date.now();
      const got = await deadLetters.get(added.id);
      assert.equal(got?.status, 'dead');
      assert.deepEqual(got?.attempts, [...first, ...again]);
      assertTimeBetween(got?.updatedAt, before, after, 'updatedAt after a failed redrive');
      assert.ok((got?.updatedAt.getTime() ?? 0) > (redriven?.updatedAt.getTime() ?? 0), 'a failed redrive moves updatedAt');
      assert.deepEqual({ ...got, attempts: first, updatedAt: added.updatedAt }, added, 'only status, attempts and updatedAt change');
      assert.equal((await deadLetters.get(other.id))?.status, 'redrive', 'other letters are untouched');

      // Settling again (a duplicate report) changes nothing: the letter is no longer in redrive.
      await deadLetters.settleRedrive(added.id, { ok: false, attempts: again });
      assert.deepEqual((await deadLetters.get(added.id))?.attempts, [...first, ...again]);

      // A second round appends again, in order.
      const third: FailedAttempt[] = [
        { at: new Date(1_700_000_200_004), error: 'Error: four' },
        { at: new Date(1_700_000_200_005), error: 'Error: five' },
      ];
      assert.equal(await deadLetters.redrive({ id: added.id }), 1);
      await deadLetters.settleRedrive(added.id, { ok: false, attempts: third });
      assert.deepEqual((await deadLetters.get(added.id))?.attempts, [...first, ...again, ...third]);
      assert.equal(await deadLetters.redrive({ id: added.id }), 1);
      await deadLetters.settleRedrive(added.id, { ok: false, attempts: [] });
      assert.deepEqual((await deadLetters.get(added.id))?.attempts, [...first, ...again, ...third], 'no new attempts: none appended');
      assert.equal((await deadLetters.get(added.id))?.status, 'dead');
    });

    test('settleRedrive of a letter discarded meanwhile does not fail and resurrects nothing', async ({ deadLetters }) => {
      const a = await deadLetters.add(letter());
      const b = await deadLetters.add(letter());
      await deadLetters.redrive({ source: 'mailer' });
      assert.equal(await deadLetters.discard({ id: a.id }), 1);
      assert.equal(await deadLetters.discard({ id: b.id }), 1);
      await deadLetters.settleRedrive(a.id, { ok: false, attempts: [{ at: new Date(), error: 'failed again' }] });
      await deadLetters.settleRedrive(b.id, { ok: true });
      assert.equal(await deadLetters.get(a.id), undefined);
      assert.equal(await deadLetters.get(b.id), undefined);
      assert.equal(await deadLetters.count(), 0);
      assert.deepEqual(await deadLetters.list(), []);
    });

    test('discard by id and by source removes letters in any status and returns how many', async ({ deadLetters }) => {
      const a1 = await deadLetters.add(letter({ source: 'a' }));
      const a2 = await deadLetters.add(letter({ source: 'a' }));
      await deadLetters.add(letter({ source: 'a' }));
      const b1 = await deadLetters.add(letter({ source: 'b' }));
      await deadLetters.redrive({ id: a2.id });
      assert.equal(await deadLetters.discard({ id: a1.id }), 1);
      assert.equal(await deadLetters.get(a1.id), undefined);
      assert.equal(await deadLetters.discard({ id: a1.id }), 0, 'already gone');
      assert.equal(await deadLetters.discard({ id: uuidv7() }), 0);
      assert.equal(await deadLetters.discard({ source: 'a' }), 2, 'a dead and a redrive letter');
      assert.equal(await deadLetters.count({ source: 'a' }), 0);
      assert.equal(await deadLetters.discard({ source: 'a' }), 0);
      assert.deepEqual(await deadLetters.list(), [b1], 'other sources are untouched');
    });

    test('add rejects bad input with typed errors and stores nothing', async ({ deadLetters }) => {
      const invalid: Array<[string, Partial<Record<keyof NewDeadLetter, unknown>>]> = [
        ['empty source', { source: '' }],
        ['non-string source', { source: 42 }],
        ['unknown stage', { stage: 'retry' }],
        ['non-string key', { key: undefined }],
        ['non-integer position', { eventPosition: 1.5 }],
        ['negative position', { eventPosition: -1 }],
        ['string position', { eventPosition: '3' }],
        ['non-string eventId', { eventId: 7 }],
        ['non-string eventType', { eventType: null }],
        ['non-string streamId', { streamId: {} }],
        ['attempts not an array', { attempts: 'boom' }],
        ['attempt without a Date', { attempts: [{ at: 1_700_000_000_000, error: 'x' }] }],
        ['attempt with an invalid Date', { attempts: [{ at: new Date('nope'), error: 'x' }] }],
        ['attempt with a non-string error', { attempts: [{ at: new Date(), error: new Error('x') }] }],
      ];
      for (const [what, overrides] of invalid) {
        await rejectsWith(() => deadLetters.add(letter(overrides)), ErrorCode.InvalidArgument, what);
      }
      await rejectsWith(() => deadLetters.add(null as unknown as NewDeadLetter), ErrorCode.InvalidArgument, 'no letter');
      const cyclic: Record<string, unknown> = {};
      cyclic.self = cyclic;
      const unserialisable: Array<[string, unknown]> = [
        ['BigInt', { amount: 10n }],
        ['cycle', cyclic],
        ['undefined', undefined],
        ['function', () => 1],
      ];
      for (const [what, payload] of unserialisable) {
        await rejectsWith(() => deadLetters.add(letter({ payload })), ErrorCode.Serialization, what);
      }
      assert.equal(await deadLetters.count(), 0);
      assert.deepEqual(await deadLetters.list(), []);
    });

    test('queries, selectors and outcomes reject bad input with typed errors and change nothing', async ({ deadLetters }) => {
      const added = await deadLetters.add(letter());
      await deadLetters.redrive({ id: added.id });
      const bad = ErrorCode.InvalidArgument;
      for (const limit of [0, -1, 1.5, '10', Number.NaN]) await rejectsWith(() => deadLetters.list({ limit: limit as number }), bad, `limit ${String(limit)}`);
      await rejectsWith(() => deadLetters.list({ status: 'gone' as 'dead' }), bad);
      await rejectsWith(() => deadLetters.list({ source: '' }), bad);
      await rejectsWith(() => deadLetters.list({ afterId: 'not-an-id' }), bad);
      await rejectsWith(() => deadLetters.count({ status: 'gone' as 'dead' }), bad);
      await rejectsWith(() => deadLetters.count({ source: '' }), bad);
      for (const id of ['', 'not-an-id', 42, undefined]) {
        await rejectsWith(() => deadLetters.get(id as string), bad, `get ${String(id)}`);
        await rejectsWith(() => deadLetters.settleRedrive(id as string, { ok: true }), bad, `settle ${String(id)}`);
      }
      for (const selector of [{}, { id: added.id, source: 'mailer' }, { source: '' }, { id: 'nope' }, null, 'mailer']) {
        await rejectsWith(() => deadLetters.redrive(selector as { id: string }), bad, `redrive ${JSON.stringify(selector)}`);
        await rejectsWith(() => deadLetters.discard(selector as { id: string }), bad, `discard ${JSON.stringify(selector)}`);
      }
      const outcomes = [undefined, {}, { ok: 'yes' }, { ok: false }, { ok: false, attempts: [{ at: 'today', error: 'x' }] }];
      for (const outcome of outcomes) {
        await rejectsWith(() => deadLetters.settleRedrive(added.id, outcome as { ok: true }), bad, `outcome ${JSON.stringify(outcome)}`);
      }
      assert.deepEqual(await deadLetters.list(), [await deadLetters.get(added.id)]);
      assert.equal((await deadLetters.get(added.id))?.status, 'redrive', 'a rejected settle left the letter in redrive');
      assert.deepEqual((await deadLetters.get(added.id))?.attempts, added.attempts);
    });

    test('fenced add: stored while the fence holds (an equal or newer token, or a checkpoint nobody claimed); refused whole after a newer claim', async ({ deadLetters, checkpoints }) => {
      await checkpoints.claim('mailer-cp', 5);
      const a = await deadLetters.add(letter(), fence('mailer-cp', 5));
      assert.deepEqual(await deadLetters.get(a.id), a);
      const b = await deadLetters.add(letter(), fence('mailer-cp', 6));
      const c = await deadLetters.add(letter(), fence('never-claimed', 0));
      assert.equal(await checkpoints.claim('mailer-cp', 5), undefined, 'a write with a newer token does not claim the checkpoint');
      assert.deepEqual(await checkpoints.list(), [], 'fenced writes save no checkpoint');
      assert.equal(await checkpoints.load('never-claimed'), undefined);

      await checkpoints.claim('mailer-cp', 7);
      await assertFenced(() => deadLetters.add(letter(), fence('mailer-cp', 6)), 'mailer-cp', 6, 7, 'the stale leader (token 6) after a claim with 7');
      await assertFenced(() => deadLetters.add(letter(), fence('mailer-cp', 0)), 'mailer-cp', 0, 7);
      // A save with a newer token moves the fence as a claim does.
      await checkpoints.save('mailer-cp', 3, { fencingToken: 9 });
      await assertFenced(() => deadLetters.add(letter(), fence('mailer-cp', 8)), 'mailer-cp', 8, 9);
      assert.deepEqual(await deadLetters.list(), [a, b, c], 'nothing of a fenced add was stored');
      assert.equal(await deadLetters.count(), 3);
      const d = await deadLetters.add(letter(), fence('mailer-cp', 9));
      assert.deepEqual(ids(await deadLetters.list()), ids([a, b, c, d]));
    });

    test('fenced settleRedrive: after a newer claim neither a success nor a failure changes anything', async ({ deadLetters, checkpoints }) => {
      const a = await deadLetters.add(letter());
      const b = await deadLetters.add(letter());
      const dead = await deadLetters.add(letter({ source: 'other' }));
      await deadLetters.redrive({ source: 'mailer' });
      await checkpoints.claim('cp', 2);
      const before = await deadLetters.list();
      await clockPast(new Date(Math.max(...before.map((l) => l.updatedAt.getTime()))));
      const again: FailedAttempt[] = [{ at: new Date(1_700_000_500_000), error: 'Error: again' }];
      await assertFenced(() => deadLetters.settleRedrive(a.id, { ok: true }, fence('cp', 1)), 'cp', 1, 2, 'a stale success');
      await assertFenced(() => deadLetters.settleRedrive(b.id, { ok: false, attempts: again }, fence('cp', 1)), 'cp', 1, 2, 'a stale failure');
      await assertFenced(() => deadLetters.settleRedrive(dead.id, { ok: true }, fence('cp', 1)), 'cp', 1, 2, 'a stale settle of a letter not in redrive');
      await assertFenced(() => deadLetters.settleRedrive(uuidv7(), { ok: true }, fence('cp', 1)), 'cp', 1, 2, 'a stale settle of an unknown letter');
      assert.deepEqual(await deadLetters.list(), before, 'status, attempts and updatedAt unchanged');

      await deadLetters.settleRedrive(a.id, { ok: true }, fence('cp', 2));
      await deadLetters.settleRedrive(b.id, { ok: false, attempts: again }, fence('cp', 3));
      assert.equal(await deadLetters.get(a.id), undefined, 'the current leader settles');
      const failed = await deadLetters.get(b.id);
      assert.equal(failed?.status, 'dead');
      assert.deepEqual(failed?.attempts, [...b.attempts, ...again]);
      assert.equal(await deadLetters.redrive({ id: b.id }), 1);
      await deadLetters.settleRedrive(b.id, { ok: true }, fence('never-claimed', 0));
      assert.equal(await deadLetters.get(b.id), undefined, 'a missing checkpoint row fences nothing');
      await deadLetters.settleRedrive(dead.id, { ok: true }, fence('cp', 2));
      assert.deepEqual(await deadLetters.list(), [dead], 'a settle with the fence holding still changes only a letter in redrive');
      assert.equal(await checkpoints.claim('cp', 2), undefined, 'fenced writes do not touch the checkpoint');
    });

    test('a malformed fence is refused with ESKIT_INVALID_ARGUMENT before anything is written', async ({ deadLetters, checkpoints }) => {
      await checkpoints.claim('cp', 1);
      const redriven = await deadLetters.add(letter());
      await deadLetters.redrive({ id: redriven.id });
      const stored = await deadLetters.list();
      const bad = ErrorCode.InvalidArgument;
      for (const [what, options] of MALFORMED_FENCES) {
        await rejectsWith(() => deadLetters.add(letter(), options as FencedWriteOptions), bad, `add: ${what}`);
        await rejectsWith(() => deadLetters.settleRedrive(redriven.id, { ok: true }, options as FencedWriteOptions), bad, `settle ok: ${what}`);
        await rejectsWith(
          () => deadLetters.settleRedrive(redriven.id, { ok: false, attempts: [{ at: new Date(), error: 'x' }] }, options as FencedWriteOptions),
          bad,
          `settle failed: ${what}`,
        );
      }
      assert.deepEqual(await deadLetters.list(), stored, 'nothing was stored or settled');
      const unfenced = await deadLetters.add(letter(), {});
      await deadLetters.settleRedrive(redriven.id, { ok: true }, { fence: undefined });
      assert.deepEqual(await deadLetters.list(), [unfenced], 'no fence: unconditional');
    });
  });
}
