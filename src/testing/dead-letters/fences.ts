import assert from 'node:assert/strict';
import { v7 as uuidv7 } from 'uuid';
import type { FencedWriteOptions } from '../../core/checkpoint.js';
import type { FailedAttempt } from '../../core/dead-letter.js';
import { ErrorCode } from '../../core/errors.js';
import { assertFenced, MALFORMED_FENCES } from '../fences.js';
import { clockPast, fence, ids, letter, rejectsWith } from './context.js';
import type { DeadLetterTest } from './context.js';

/** A leader's fenced add and settleRedrive, and malformed fences. */
export function fenceTests(test: DeadLetterTest): void {
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
}
