import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import type { NewDeadLetter } from '../../src/core/dead-letter.js';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import {
  migrateSqlite,
  SqliteCheckpointStore,
  SqliteCompletionStore,
  SqliteDeadLetterStore,
  SqliteEventStore,
  SQLITE_MIGRATIONS,
  sqliteSchemaVersion,
} from '../../src/sqlite/index.js';
import { deadLetterStoreConformance } from '../../src/testing/dead-letter-conformance.js';
import { databasesAfterEach, removeDatabase, tempDatabasePath } from './helpers.js';

deadLetterStoreConformance({
  name: 'sqlite, sharing an event store connection',
  create: async () => {
    const path = tempDatabasePath('dead-letters');
    const store = new SqliteEventStore({ path });
    return {
      deadLetters: new SqliteDeadLetterStore({ store }),
      checkpoints: new SqliteCheckpointStore({ store }),
      close: async () => {
        await store.close();
        removeDatabase(path);
      },
    };
  },
});

deadLetterStoreConformance({
  name: 'sqlite, the dead letters and the checkpoints on their own connections to one file',
  create: async () => {
    const path = tempDatabasePath('dead-letters');
    const deadLetters = new SqliteDeadLetterStore({ path });
    const checkpointConnection = new Database(path);
    return {
      deadLetters,
      checkpoints: new SqliteCheckpointStore({ database: checkpointConnection }),
      close: async () => {
        await deadLetters.close();
        checkpointConnection.close();
        removeDatabase(path);
      },
    };
  },
});

const { freshPath, closeAfterTest } = databasesAfterEach('dead-letters');

function track<T extends { close(): unknown }>(handle: T): T {
  closeAfterTest(() => handle.close());
  return handle;
}

function letter(overrides: Partial<NewDeadLetter> = {}): NewDeadLetter {
  return {
    source: 'mailer',
    stage: 'execute',
    key: 'customer-1',
    payload: { to: 'a@example.com' },
    eventId: '0190b1d2-3c4d-7e5f-8a6b-7c8d9e0f1a2b',
    eventType: 'OrderPlaced',
    eventPosition: 7,
    streamId: 'order-1',
    attempts: [{ at: new Date(1_700_000_000_123), error: 'Error: boom' }],
    ...overrides,
  };
}

async function expectCode(fn: () => Promise<unknown>, code: string): Promise<Error> {
  let caught: unknown;
  await assert.rejects(fn, (error: unknown) => {
    caught = error;
    assert.ok(isEskitError(error, code), `expected ${code}, got ${String(error)}`);
    return true;
  });
  return caught as Error;
}

describe('SqliteDeadLetterStore: schema and storage', () => {
  it('migration 4 creates the tables and index, and a letter is stored as documented', async () => {
    const store = track(new SqliteEventStore({ path: freshPath() }));
    const db = store.database;
    const migration = SQLITE_MIGRATIONS.find((m) => m.version === 4);
    assert.equal(migration?.name, 'dead letters and completions');
    assert.ok(sqliteSchemaVersion(db) >= 4);
    const index = db.prepare("SELECT sql FROM sqlite_master WHERE name = 'eskit_dead_letters_source_status_id'").pluck().get() as string;
    assert.match(index, /ON eskit_dead_letters \(source, status, id\)/);
    const completions = db.prepare("SELECT sql FROM sqlite_master WHERE name = 'eskit_completions'").pluck().get() as string;
    assert.match(completions, /PRIMARY KEY \(source, position, item_id\)\s*\)\s*WITHOUT ROWID/);

    const deadLetters = new SqliteDeadLetterStore({ store });
    const added = await deadLetters.add(letter({ payload: { ü: [1, null] } }));
    const row = db.prepare('SELECT * FROM eskit_dead_letters').get() as Record<string, unknown>;
    assert.deepEqual(row, {
      id: added.id,
      source: 'mailer',
      stage: 'execute',
      key: 'customer-1',
      payload: '{"ü":[1,null]}',
      event_id: '0190b1d2-3c4d-7e5f-8a6b-7c8d9e0f1a2b',
      event_type: 'OrderPlaced',
      event_position: 7,
      stream_id: 'order-1',
      attempts: '[{"at":1700000000123,"error":"Error: boom"}]',
      status: 'dead',
      created_at: added.createdAt.getTime(),
      updated_at: added.createdAt.getTime(),
    });
    assert.throws(() => db.prepare("UPDATE eskit_dead_letters SET status = 'lost'").run(), /CHECK constraint failed/);
  });

  it('the queries the leading node and the operator run use the indexes', async () => {
    const store = track(new SqliteEventStore({ path: freshPath() }));
    const plan = (sql: string): string =>
      (store.database.prepare(`EXPLAIN QUERY PLAN ${sql}`).all() as { detail: string }[]).map((r) => r.detail).join('; ');
    const poll = plan("SELECT * FROM eskit_dead_letters WHERE source = 'm' AND status = 'redrive' AND id > 'x' ORDER BY id LIMIT 100");
    assert.match(poll, /USING INDEX eskit_dead_letters_source_status_id \(source=\? AND status=\? AND id>\?\)/);
    assert.doesNotMatch(poll, /TEMP B-TREE/);
    assert.match(plan("UPDATE eskit_dead_letters SET status = 'redrive' WHERE source = 'm' AND status = 'dead'"), /USING INDEX eskit_dead_letters_source_status_id/);
    assert.match(plan("SELECT * FROM eskit_dead_letters WHERE id = 'x'"), /USING INDEX sqlite_autoindex_eskit_dead_letters_1 \(id=\?\)/);
    assert.match(plan("SELECT position, item_id FROM eskit_completions WHERE source = 'm' AND position > 3"), /USING PRIMARY KEY \(source=\? AND position>\?\)/);
    assert.match(plan("DELETE FROM eskit_completions WHERE source = 'm' AND position <= 3"), /USING PRIMARY KEY \(source=\? AND position<\?\)/);
  });

  it('upgrades a database at schema version 3, keeping its events', async () => {
    const path = freshPath();
    const old = new Database(path);
    migrateSqlite(old, SQLITE_MIGRATIONS.slice(0, 3));
    old.prepare(
      "INSERT INTO eskit_events (event_id, stream_id, stream_version, type, data, metadata, created_at) VALUES ('0190b1d2-3c4d-7e5f-8a6b-7c8d9e0f1a2b', 's', 1, 'A', '1', '{}', 1)",
    ).run();
    old.close();
    const deadLetters = track(new SqliteDeadLetterStore({ path }));
    assert.equal(sqliteSchemaVersion(deadLetters.database), SQLITE_MIGRATIONS[SQLITE_MIGRATIONS.length - 1]?.version);
    await deadLetters.add(letter());
    assert.equal(await deadLetters.count(), 1);
    const store = track(new SqliteEventStore({ path }));
    assert.equal(await store.headPosition(), 1);
  });

  it('returns numbers and Dates even when the shared handle defaults to BigInt', async () => {
    const db = track(new Database(freshPath()));
    db.defaultSafeIntegers(true);
    const deadLetters = new SqliteDeadLetterStore({ database: db });
    const completions = new SqliteCompletionStore({ database: db });
    const added = await deadLetters.add(letter({ eventPosition: 2 ** 40 }));
    const [listed] = await deadLetters.list();
    assert.equal(listed?.eventPosition, 2 ** 40);
    assert.equal(typeof (await deadLetters.count()), 'number');
    assert.deepEqual(await deadLetters.get(added.id), added);
    assert.equal(await deadLetters.redrive({ source: 'mailer' }), 1);
    await deadLetters.settleRedrive(added.id, { ok: false, attempts: [{ at: new Date(5), error: 'again' }] });
    assert.deepEqual((await deadLetters.get(added.id))?.attempts, [...added.attempts, { at: new Date(5), error: 'again' }]);
    await completions.markCompleted('mailer', [{ position: 2 ** 40, itemId: 'x' }]);
    assert.deepEqual(await completions.completedAfter('mailer', 0), new Set([`${2 ** 40}/x`]));
  });
});

describe('SqliteDeadLetterStore: several connections', () => {
  it('a discard on one connection wins over a settle from another: nothing is resurrected', async () => {
    const path = freshPath();
    const operator = track(new SqliteDeadLetterStore({ path }));
    const node = track(new SqliteDeadLetterStore({ path }));
    const a = await operator.add(letter());
    const b = await operator.add(letter({ key: 'customer-2' }));
    assert.deepEqual(await node.get(a.id), a, 'visible on the other connection');
    assert.equal(await operator.redrive({ source: 'mailer' }), 2);
    const polled = await node.list({ source: 'mailer', status: 'redrive' });
    assert.deepEqual(polled.map((l) => l.id), [a.id, b.id]);
    assert.equal(await operator.discard({ source: 'mailer' }), 2);
    await node.settleRedrive(a.id, { ok: false, attempts: [{ at: new Date(), error: 'failed again' }] });
    await node.settleRedrive(b.id, { ok: true });
    assert.equal(await operator.count(), 0);
    assert.equal(await node.get(a.id), undefined);
  });

  it('a settle from another connection is seen at once', async () => {
    const path = freshPath();
    const operator = track(new SqliteDeadLetterStore({ path }));
    const node = track(new SqliteDeadLetterStore({ path }));
    const a = await operator.add(letter());
    await operator.redrive({ id: a.id });
    await node.settleRedrive(a.id, { ok: false, attempts: [{ at: new Date(9), error: 'nope' }] });
    const seen = await operator.get(a.id);
    assert.equal(seen?.status, 'dead');
    assert.deepEqual(seen?.attempts, [...a.attempts, { at: new Date(9), error: 'nope' }]);
  });

  it('waits out another connection\'s write lock, and fails with ESKIT_STORE_BUSY (changing nothing) when it lasts too long', async () => {
    const path = freshPath();
    const deadLetters = track(new SqliteDeadLetterStore({ path, busyTimeoutMs: 50 }));
    const a = await deadLetters.add(letter());
    await deadLetters.redrive({ id: a.id });
    const blocker = track(new Database(path));
    blocker.exec('BEGIN IMMEDIATE');
    const started = Date.now();
    const busy = await expectCode(() => deadLetters.add(letter({ key: 'other' })), ErrorCode.StoreBusy);
    assert.ok(Date.now() - started >= 40, 'it waited for the busy timeout first');
    assert.match(busy.message, /store a dead letter of "mailer"/);
    await expectCode(() => deadLetters.settleRedrive(a.id, { ok: false, attempts: [{ at: new Date(), error: 'x' }] }), ErrorCode.StoreBusy);
    await expectCode(() => deadLetters.settleRedrive(a.id, { ok: true }), ErrorCode.StoreBusy);
    await expectCode(() => deadLetters.discard({ source: 'mailer' }), ErrorCode.StoreBusy);
    await expectCode(() => deadLetters.redrive({ source: 'mailer' }), ErrorCode.StoreBusy);
    // Readers are not blocked by a writer (WAL).
    assert.deepEqual(await deadLetters.list(), [{ ...a, status: 'redrive', updatedAt: (await deadLetters.get(a.id))?.updatedAt }]);
    blocker.exec('ROLLBACK');
    const after = await deadLetters.get(a.id);
    assert.equal(after?.status, 'redrive');
    assert.deepEqual(after?.attempts, a.attempts);
    assert.equal(await deadLetters.count(), 1);
    await deadLetters.settleRedrive(a.id, { ok: false, attempts: [{ at: new Date(1), error: 'x' }] });
    assert.equal((await deadLetters.get(a.id))?.attempts.length, 2);
  });
});

describe('SqliteDeadLetterStore: damaged rows', () => {
  it('reports a row changed outside eskit with its id, and still lets the operator discard it', async () => {
    const store = track(new SqliteEventStore({ path: freshPath() }));
    const deadLetters = new SqliteDeadLetterStore({ store });
    const bad = await deadLetters.add(letter());
    const good = await deadLetters.add(letter({ key: 'good' }));
    store.database.prepare("UPDATE eskit_dead_letters SET payload = '{not json' WHERE id = ?").run(bad.id);
    const error = await expectCode(() => deadLetters.get(bad.id), ErrorCode.Serialization);
    assert.match(error.message, new RegExp(`dead letter ${bad.id} cannot be read: its payload is not valid JSON.*discard`));
    await expectCode(() => deadLetters.list(), ErrorCode.Serialization);
    assert.deepEqual(await deadLetters.list({ afterId: bad.id }), [good]);

    store.database.prepare("UPDATE eskit_dead_letters SET payload = 'null', attempts = '{\"at\":1}' WHERE id = ?").run(bad.id);
    await expectCode(() => deadLetters.get(bad.id), ErrorCode.Serialization);
    await deadLetters.redrive({ id: bad.id });
    await expectCode(() => deadLetters.settleRedrive(bad.id, { ok: false, attempts: [{ at: new Date(), error: 'x' }] }), ErrorCode.Serialization);
    const row = store.database.prepare('SELECT status, attempts FROM eskit_dead_letters WHERE id = ?').get(bad.id);
    assert.deepEqual(row, { status: 'redrive', attempts: '{"at":1}' }, 'the failed settle changed nothing');
    assert.equal(await deadLetters.discard({ id: bad.id }), 1);
    assert.deepEqual(await deadLetters.list(), [good]);
  });
});

describe('SqliteDeadLetterStore: connections and lifecycle', () => {
  it('needs exactly one of store, database or path', () => {
    const path = freshPath();
    const store = track(new SqliteEventStore({ path }));
    for (const Store of [SqliteDeadLetterStore, SqliteCompletionStore]) {
      assert.throws(() => new Store({}), (e: unknown) => isEskitError(e, ErrorCode.InvalidArgument) && /exactly one of/.test((e as Error).message));
      assert.throws(() => new Store({ store, path }), (e: unknown) => isEskitError(e, ErrorCode.InvalidArgument));
      assert.throws(() => new Store({ path: '' }), (e: unknown) => isEskitError(e, ErrorCode.InvalidArgument));
    }
  });

  it('close() closes a connection it opened; every call after it fails with ESKIT_STORE_CLOSED', async () => {
    const path = freshPath();
    const deadLetters = new SqliteDeadLetterStore({ path });
    const completions = new SqliteCompletionStore({ path });
    const added = await deadLetters.add(letter());
    await completions.markCompleted('mailer', [{ position: 1, itemId: 'x' }]);
    await deadLetters.close();
    await completions.close();
    await deadLetters.close();
    await completions.close();
    assert.equal(deadLetters.database.open, false);
    assert.equal(completions.database.open, false);
    await expectCode(() => deadLetters.add(letter()), ErrorCode.StoreClosed);
    await expectCode(() => deadLetters.get(added.id), ErrorCode.StoreClosed);
    await expectCode(() => deadLetters.list(), ErrorCode.StoreClosed);
    await expectCode(() => deadLetters.redrive({ id: added.id }), ErrorCode.StoreClosed);
    await expectCode(() => completions.completedAfter('mailer', 0), ErrorCode.StoreClosed);
    await expectCode(() => completions.markCompleted('mailer', [{ position: 2, itemId: 'x' }]), ErrorCode.StoreClosed);
    const reopened = track(new SqliteDeadLetterStore({ path }));
    assert.deepEqual(await reopened.list(), [added], 'what was written is durable');
  });

  it('close() leaves a shared connection open; a closed event store makes calls fail with ESKIT_STORE_CLOSED', async () => {
    const store = new SqliteEventStore({ path: freshPath() });
    closeAfterTest(() => store.close());
    const deadLetters = new SqliteDeadLetterStore({ store });
    const completions = new SqliteCompletionStore({ store });
    await deadLetters.close();
    await completions.close();
    assert.equal(store.database.open, true);
    assert.equal((await store.append('s', [{ type: 'A', data: 1 }])).position, 1);
    await expectCode(() => deadLetters.count(), ErrorCode.StoreClosed);
    const other = new SqliteDeadLetterStore({ store });
    const otherCompletions = new SqliteCompletionStore({ store });
    await other.count();
    await store.close();
    await expectCode(() => other.count(), ErrorCode.StoreClosed);
    await expectCode(() => other.add(letter()), ErrorCode.StoreClosed);
    await expectCode(() => otherCompletions.prune('mailer', 1), ErrorCode.StoreClosed);
  });

  it('with migrate: false on a new file, says to migrate; works once migrated', async () => {
    const db = track(new Database(freshPath()));
    const deadLetters = new SqliteDeadLetterStore({ database: db, migrate: false });
    const completions = new SqliteCompletionStore({ database: db, migrate: false });
    assert.equal(sqliteSchemaVersion(db), 0);
    const error = await expectCode(() => deadLetters.add(letter()), ErrorCode.Migration);
    assert.match(error.message, /migrate\(\)/);
    await expectCode(() => completions.completedAfter('mailer', 0), ErrorCode.Migration);
    migrateSqlite(db);
    assert.equal(await deadLetters.count(), 0);
    await deadLetters.add(letter());
    assert.equal(await deadLetters.count(), 1);
    assert.deepEqual(await completions.completedAfter('mailer', 0), new Set());
  });
});
