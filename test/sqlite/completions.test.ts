import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import { SqliteCompletionStore, SqliteEventStore } from '../../src/sqlite/index.js';
import { databasesAfterEach } from './helpers.js';

// The shared behaviour is in the conformance suite (run in dead-letters.test.ts); this is SQLite's own.

const { freshPath, closeAfterTest } = databasesAfterEach('completions');

function track<T extends { close(): unknown }>(handle: T): T {
  closeAfterTest(() => handle.close());
  return handle;
}

describe('SqliteCompletionStore', () => {
  it('records a large batch in one call, and another connection sees all of it', async () => {
    const path = freshPath();
    const writer = track(new SqliteCompletionStore({ path }));
    const reader = track(new SqliteCompletionStore({ path }));
    const items = Array.from({ length: 20_000 }, (_, i) => ({ position: Math.floor(i / 4) + 1, itemId: `item-${i % 4}` }));
    await writer.markCompleted('mailer', items);
    const after = await reader.completedAfter('mailer', 0);
    assert.equal(after.size, 20_000);
    assert.ok(after.has('5000/item-3') && after.has('1/item-0'));
    assert.equal((await reader.completedAfter('mailer', 4999)).size, 4);
    await reader.prune('mailer', 4999);
    assert.deepEqual(await writer.completedAfter('mailer', 0), new Set(['5000/item-0', '5000/item-1', '5000/item-2', '5000/item-3']));
  });

  it('a batch is all or nothing: a busy database records none of it and says ESKIT_STORE_BUSY', async () => {
    const path = freshPath();
    const completions = track(new SqliteCompletionStore({ path, busyTimeoutMs: 50 }));
    await completions.markCompleted('mailer', [{ position: 1, itemId: 'a' }]);
    const blocker = track(new Database(path));
    blocker.exec('BEGIN IMMEDIATE');
    await assert.rejects(
      completions.markCompleted('mailer', [
        { position: 2, itemId: 'b' },
        { position: 3, itemId: 'c' },
      ]),
      (error: unknown) => isEskitError(error, ErrorCode.StoreBusy) && /record 2 completion\(s\) of "mailer"/.test((error as Error).message),
    );
    await assert.rejects(completions.prune('mailer', 5), (error: unknown) => isEskitError(error, ErrorCode.StoreBusy));
    assert.deepEqual(await completions.completedAfter('mailer', 0), new Set(['1/a']), 'reads go on during the other write');
    blocker.exec('ROLLBACK');
    await completions.markCompleted('mailer', [{ position: 2, itemId: 'b' }]);
    assert.deepEqual(await completions.completedAfter('mailer', 0), new Set(['1/a', '2/b']));
  });

  it('a failure inside the batch rolls back the items written before it', async () => {
    const store = track(new SqliteEventStore({ path: freshPath() }));
    const completions = new SqliteCompletionStore({ store });
    // A trigger that fails the third insert stands in for a failure the checks cannot foresee.
    store.database.exec(`
      CREATE TEMP TRIGGER fail_third BEFORE INSERT ON eskit_completions WHEN NEW.item_id = 'boom'
      BEGIN SELECT RAISE(ABORT, 'disk full, say'); END;`);
    await assert.rejects(
      completions.markCompleted('mailer', [
        { position: 1, itemId: 'a' },
        { position: 2, itemId: 'b' },
        { position: 3, itemId: 'boom' },
      ]),
      /disk full, say/,
    );
    assert.deepEqual(await completions.completedAfter('mailer', 0), new Set());
    assert.equal(store.database.inTransaction, false);
  });
});
