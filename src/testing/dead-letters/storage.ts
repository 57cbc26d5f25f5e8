import assert from 'node:assert/strict';
import type { FailedAttempt, NewDeadLetter } from '../../core/dead-letter.js';
import { ErrorCode, isEskitError } from '../../core/errors.js';
import { assertTimeBetween, letter, UUID_V7 } from './context.js';
import type { DeadLetterTest } from './context.js';

/** Adding and reading letters: ids, timestamps, and what round-trips exactly. */
export function storageTests(test: DeadLetterTest): void {
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

}
