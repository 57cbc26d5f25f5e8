import assert from 'node:assert/strict';
import type { NewDeadLetter } from '../../core/dead-letter.js';
import { ErrorCode } from '../../core/errors.js';
import { letter, rejectsWith } from './context.js';
import type { DeadLetterTest } from './context.js';

/** Bad input: typed errors, and nothing stored or changed. */
export function inputTests(test: DeadLetterTest): void {
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
    await rejectsWith(() => deadLetters.list({ newestFirst: 'yes' as unknown as boolean }), bad);
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

}
