// Group commit on SQLite, where only the database can refuse an append for reasons of its own: each
// append of a group runs in a savepoint, so one refused by a trigger or constraint of the application
// fails alone, as PostgreSQL's does.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { SqliteEventStore } from '../../src/sqlite/index.js';

const dir = mkdtempSync(join(tmpdir(), 'eskit-group-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const note = (n: number) => ({ type: 'Noted', data: { n } });

describe('SQLite group commit', () => {
  it('a trigger of the application that refuses one append of a group fails that append alone', async () => {
    const store = new SqliteEventStore({ path: join(dir, 'abort.db') });
    try {
      store.database.exec(`CREATE TRIGGER refuse_forbidden BEFORE INSERT ON eskit_events WHEN NEW.type = 'Forbidden'
                           BEGIN SELECT RAISE(ABORT, 'forbidden by the application'); END`);
      const results = await Promise.allSettled([
        store.append('a', [note(1)]),
        store.append('b', [note(2), { type: 'Forbidden', data: {} }]),
        store.append('c', [note(3)]),
        // One event: written without a savepoint of its own, as its one INSERT is all it writes.
        store.append('d', [{ type: 'Forbidden', data: {} }]),
        store.append('e', [note(5)]),
      ]);
      assert.deepEqual(
        results.map((r) => r.status),
        ['fulfilled', 'rejected', 'fulfilled', 'rejected', 'fulfilled'],
      );
      assert.match(String((results[1] as PromiseRejectedResult).reason), /forbidden by the application/);
      const stored = store.database.prepare('SELECT stream_id FROM eskit_events ORDER BY position').pluck().all();
      assert.deepEqual(stored, ['a', 'c', 'e'], 'nothing of the refused appends, all of the others');
    } finally {
      await store.close();
    }
  });

  it('a trigger that rolls back the whole transaction fails the whole group, and nothing of it is written', async () => {
    const store = new SqliteEventStore({ path: join(dir, 'rollback.db') });
    try {
      store.database.exec(`CREATE TRIGGER roll_back BEFORE INSERT ON eskit_events WHEN NEW.type = 'RollBack'
                           BEGIN SELECT RAISE(ROLLBACK, 'rolled back by the application'); END`);
      const results = await Promise.allSettled([store.append('a', [note(1)]), store.append('b', [{ type: 'RollBack', data: {} }]), store.append('c', [note(3)])]);
      assert.deepEqual(
        results.map((r) => r.status),
        ['rejected', 'rejected', 'rejected'],
      );
      assert.equal(store.database.inTransaction, false);
      assert.deepEqual(store.database.prepare('SELECT count(*) FROM eskit_events').pluck().get(), 0);
      assert.equal((await store.append('d', [note(4)])).position, 1, 'the store carries on');
    } finally {
      await store.close();
    }
  });
});
