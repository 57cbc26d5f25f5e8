// What SqliteSubjectKeyStore does beyond the SubjectKeyStore contract (personal-data-conformance.test.ts
// runs that): a destroyed key's bytes leave the file and its WAL, the WAL checkpoint after forget never
// waits for another connection's reader (it is tried again until it completes), and the key store
// follows its event store's connection.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import type { Logger } from '../../src/core/logger.js';
import { migrateSqlite, openSqlite, sqlite, SQLITE_MIGRATIONS, SqliteSubjectKeyStore } from '../../src/sqlite/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { databasesAfterEach } from './helpers.js';

const { freshPath, closeAfterTest } = databasesAfterEach('subject-keys');

/** How many 8-byte windows of `key` occur in the file (0 for a missing file): 25 while the key is whole there. */
function traces(path: string, key: Uint8Array): number {
  if (!existsSync(path)) return 0;
  const file = readFileSync(path);
  let found = 0;
  for (let at = 0; at + 8 <= key.length; at++) if (file.includes(Buffer.from(key.subarray(at, at + 8)))) found++;
  return found;
}

const inFiles = (path: string, key: Uint8Array): number => traces(path, key) + traces(`${path}-wal`, key);

function recordingLogger(): Logger & { entries: Array<{ level: string; message: string }> } {
  const entries: Array<{ level: string; message: string }> = [];
  const log = (level: string) => (_fields: Record<string, unknown>, message: string) => void entries.push({ level, message });
  return { entries, debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') };
}

describe('SqliteSubjectKeyStore', () => {
  it('forget leaves no byte of the key in the database file or its WAL, whether it was checkpointed or not', async () => {
    const path = freshPath();
    const backend = sqlite({ path });
    closeAfterTest(() => backend.close());
    const keys = backend.subjectKeys;
    const kept = await keys.keyFor('kept');
    const old = await keys.keyFor('old');
    backend.database.pragma('wal_checkpoint(TRUNCATE)');
    const recent = await keys.keyFor('recent');
    assert.equal(traces(path, old.key), 25, 'the checkpointed key is in the database file (so the search finds keys)');
    assert.equal(traces(`${path}-wal`, recent.key), 25, 'the recent key is in the WAL');

    await keys.forget('old');
    await keys.forget('recent');
    assert.equal(inFiles(path, old.key), 0, 'no 8 bytes of the checkpointed key are left');
    assert.equal(inFiles(path, recent.key), 0, 'no 8 bytes of the key that was in the WAL are left');
    assert.equal(inFiles(path, kept.key), 25, 'the key of a subject not forgotten is still there');
    assert.equal(backend.database.pragma('secure_delete', { simple: true }), 1, 'secure_delete is on for the connection');
  });

  it('a reader on another connection holds the checkpoint back: forget does not wait for it, and a later forget finishes the job', async () => {
    const path = freshPath();
    const database = openSqlite(path, 5_000);
    closeAfterTest(() => database.close());
    const logger = recordingLogger();
    const keys = new SqliteSubjectKeyStore({ database, logger });
    const key = await keys.keyFor('ann');
    await keys.keyFor('bob');

    const reader = openSqlite(path);
    closeAfterTest(() => reader.open && reader.close());
    reader.prepare('BEGIN').run();
    reader.prepare('SELECT count(*) FROM eskit_subject_keys').get();
    const started = performance.now();
    const result = await keys.forget('ann');
    assert.ok(performance.now() - started < 2_500, `forget waited ${Math.round(performance.now() - started)} ms for the reader (the busy timeout is 5000)`);
    assert.equal(result.keysDestroyed, 1);
    assert.deepEqual(await keys.keysById([key.kid]), new Map([[key.kid, null]]), 'the key is destroyed all the same');
    assert.equal(database.pragma('busy_timeout', { simple: true }), 5_000, 'the busy timeout is back');
    assert.ok(logger.entries.some((entry) => entry.level === 'debug' && entry.message.includes('held back')), JSON.stringify(logger.entries));
    assert.ok(!logger.entries.some((entry) => entry.level === 'warn' || entry.level === 'error'), 'a held-back checkpoint is no warning');

    reader.prepare('COMMIT').run();
    reader.close();
    await keys.forget('bob');
    assert.equal(inFiles(path, key.key), 0, 'once the reader is gone, the next checkpoint removes every trace');
  });

  it('a checkpoint a reader held back is tried again by itself, and completes once the read is over', async () => {
    const path = freshPath();
    const database = openSqlite(path);
    closeAfterTest(() => database.close());
    const logger = recordingLogger();
    const keys = new SqliteSubjectKeyStore({ database, logger });
    const key = await keys.keyFor('fay');
    const reader = openSqlite(path);
    closeAfterTest(() => reader.open && reader.close());
    reader.prepare('BEGIN').run();
    reader.prepare('SELECT count(*) FROM eskit_subject_keys').get();
    await keys.forget('fay');
    assert.equal(inFiles(path, key.key), 25, 'held back: the destroyed key is still in the WAL');

    reader.prepare('COMMIT').run();
    // Nothing uses the key store from here on: its own timer tries the checkpoint again.
    await waitUntil(() => inFiles(path, key.key) === 0, { message: 'the pending checkpoint to be tried again and empty the WAL' });
    assert.ok(logger.entries.some((entry) => entry.level === 'debug' && entry.message.includes('is done')), JSON.stringify(logger.entries));
  });

  it('a checkpoint held back is tried again at the next use of the key store', async () => {
    const path = freshPath();
    const database = openSqlite(path);
    closeAfterTest(() => database.close());
    const keys = new SqliteSubjectKeyStore({ database, logger: recordingLogger() });
    const key = await keys.keyFor('gil');
    const reader = openSqlite(path);
    closeAfterTest(() => reader.open && reader.close());
    reader.prepare('BEGIN').run();
    reader.prepare('SELECT count(*) FROM eskit_subject_keys').get();
    await keys.forget('gil');
    reader.prepare('COMMIT').run();
    assert.equal(inFiles(path, key.key), 25, 'not tried again yet');
    await keys.isForgotten('gil');
    assert.equal(inFiles(path, key.key), 0, 'tried again before the read: the WAL is emptied');
  });

  it('a forget inside a transaction of the caller\'s is rolled back with it, and no checkpoint is tried', async () => {
    const path = freshPath();
    const backend = sqlite({ path });
    closeAfterTest(() => backend.close());
    const keys = backend.subjectKeys as SqliteSubjectKeyStore;
    const key = await keys.keyFor('cat');
    backend.database.prepare('BEGIN').run();
    const forgetting = keys.forget('cat');
    backend.database.prepare('ROLLBACK').run();
    assert.equal((await forgetting).keysDestroyed, 1);
    assert.deepEqual(await keys.keyFor('cat'), key, 'rolled back: the key is live again');
  });

  it('the backend\'s key store follows the store\'s migrate option: nothing is touched before migrate(), ESKIT_MIGRATION until then', async () => {
    const path = freshPath();
    const old = openSqlite(path);
    const keysTable = SQLITE_MIGRATIONS.find((migration) => migration.name === 'subject keys')?.version as number;
    migrateSqlite(old, SQLITE_MIGRATIONS.filter((migration) => migration.version < keysTable));
    old.close();
    const backend = sqlite({ path, migrate: false });
    closeAfterTest(() => backend.close());
    await assert.rejects(backend.subjectKeys.keyFor('dan'), (error) => isEskitError(error, ErrorCode.Migration));
    await backend.migrate();
    const key = await backend.subjectKeys.keyFor('dan');
    assert.deepEqual(await backend.subjectKeys.keyFor('dan'), key);
  });

  it('a key store on a closed event store fails with ESKIT_STORE_CLOSED', async () => {
    const backend = sqlite({ path: freshPath() });
    const keys = backend.subjectKeys;
    await keys.keyFor('eve');
    await backend.close();
    await assert.rejects(keys.keyFor('eve'), (error) => isEskitError(error, ErrorCode.StoreClosed));
    const unused = sqlite({ path: freshPath() });
    await unused.close();
    await assert.rejects(unused.subjectKeys.forget('eve'), (error) => isEskitError(error, ErrorCode.StoreClosed), 'also when it was never used before');
  });

  it('keys returned are copies: wiping one leaves the stored key', async () => {
    const backend = sqlite({ path: freshPath() });
    closeAfterTest(() => backend.close());
    const first = await backend.subjectKeys.keyFor('fay');
    const copy = new Uint8Array(first.key);
    first.key.fill(0);
    assert.deepEqual((await backend.subjectKeys.keyFor('fay')).key, copy);
    assert.deepEqual((await backend.subjectKeys.keysById([first.kid])).get(first.kid), copy);
  });
});
