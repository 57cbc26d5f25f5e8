import assert from 'node:assert/strict';
import { v7 as uuidv7 } from 'uuid';
import type { FailedAttempt } from '../../core/dead-letter.js';
import { assertTimeBetween, clockPast, ids, letter } from './context.js';
import type { DeadLetterTest } from './context.js';

/** The redrive cycle: redrive, settleRedrive (ok, failed, discarded meanwhile) and discard. */
export function redriveTests(test: DeadLetterTest): void {
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

}
