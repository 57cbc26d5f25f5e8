import assert from 'node:assert/strict';
import { v7 as uuidv7 } from 'uuid';
import type { DeadLetter } from '../../core/dead-letter.js';
import { ids, letter } from './context.js';
import type { DeadLetterTest } from './context.js';

/** list (order, filters, paging, default limit), count and get. */
export function queryTests(test: DeadLetterTest): void {
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

  test('list newest first: the same filters, and afterId pages on in that order', async ({ deadLetters }) => {
    const added: DeadLetter[] = [];
    for (let i = 0; i < 7; i++) added.push(await deadLetters.add(letter({ source: i % 3 === 2 ? 'billing' : 'mailer' })));
    const newest = [...added].reverse();
    const mailer = newest.filter((l) => l.source === 'mailer');
    assert.deepEqual(ids(await deadLetters.list({ newestFirst: true })), ids(newest));
    assert.deepEqual(ids(await deadLetters.list({ newestFirst: false })), ids(added));
    assert.deepEqual(ids(await deadLetters.list({ newestFirst: true, source: 'mailer', limit: 2 })), ids(mailer.slice(0, 2)));
    await deadLetters.redrive({ id: mailer[0]?.id as string });
    assert.deepEqual(ids(await deadLetters.list({ newestFirst: true, source: 'mailer', status: 'dead' })), ids(mailer.slice(1)));
    const paged: string[] = [];
    let page = await deadLetters.list({ newestFirst: true, limit: 3 });
    for (let pages = 1; page.length > 0; pages++) {
      assert.ok(pages <= 3 && page.length <= 3, 'seven letters take three pages of three');
      paged.push(...ids(page));
      page = await deadLetters.list({ newestFirst: true, limit: 3, afterId: page[page.length - 1]?.id });
    }
    assert.deepEqual(paged, ids(newest), 'every letter once, newest first');
    assert.deepEqual(await deadLetters.list({ newestFirst: true, afterId: newest[6]?.id }), []);
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

}
