import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import type { Recorded } from '../../src/core/event.js';
import { migrateSqlite, SqliteEventStore, SQLITE_MIGRATIONS, sqliteSchemaVersion } from '../../src/sqlite/index.js';
import { removeDatabase, runChildrenTogether, tempDatabasePath } from './helpers.js';

const opened: { close(): unknown }[] = [];
const files: string[] = [];

function freshPath(): string {
  const path = tempDatabasePath('specific');
  files.push(path);
  return path;
}

function track<T extends { close(): unknown }>(handle: T): T {
  opened.push(handle);
  return handle;
}

function rawHandle(path: string): Database.Database {
  return track(new Database(path));
}

afterEach(async () => {
  for (const handle of opened.splice(0)) await handle.close();
  for (const path of files.splice(0)) removeDatabase(path);
});

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of iterable) out.push(item);
  return out;
}

async function expectCode(fn: () => unknown, code: string): Promise<Error> {
  try {
    await fn();
  } catch (error) {
    assert.ok(isEskitError(error, code), `expected ${code}, got ${String(error)}`);
    return error as Error;
  }
  assert.fail(`expected ${code}, but the call succeeded`);
}

function assertStrictlyIncreasing(values: readonly number[], what: string): void {
  for (let i = 1; i < values.length; i++) {
    assert.ok((values[i] as number) > (values[i - 1] as number), `${what} must be strictly increasing at index ${i}: ${values.join(',')}`);
  }
}

describe('SqliteEventStore: construction and connection', () => {
  it('needs exactly one of path and database', () => {
    assert.throws(() => new SqliteEventStore({}), (e: unknown) => isEskitError(e, ErrorCode.InvalidArgument));
    const db = rawHandle(':memory:');
    assert.throws(() => new SqliteEventStore({ path: ':memory:', database: db }), (e: unknown) => isEskitError(e, ErrorCode.InvalidArgument));
    assert.throws(() => new SqliteEventStore({ path: '' }), (e: unknown) => isEskitError(e, ErrorCode.InvalidArgument));
    assert.throws(() => new SqliteEventStore({ path: ':memory:', busyTimeoutMs: -1 }), (e: unknown) => isEskitError(e, ErrorCode.InvalidArgument));
  });

  it('a file in a folder that does not exist: ESKIT_INVALID_ARGUMENT saying to create the folder', () => {
    assert.throws(
      () => new SqliteEventStore({ path: `${freshPath()}-missing-folder/app.db` }),
      (e: unknown) => isEskitError(e, ErrorCode.InvalidArgument) && /directory does not exist\. Create it first/.test((e as Error).message),
    );
  });

  it('opens the file in WAL mode with synchronous=NORMAL and the busy timeout', async () => {
    const store = track(new SqliteEventStore({ path: freshPath(), busyTimeoutMs: 1234 }));
    assert.equal(store.database.pragma('journal_mode', { simple: true }), 'wal');
    assert.equal(store.database.pragma('synchronous', { simple: true }), 1); // NORMAL
    assert.equal(store.database.pragma('busy_timeout', { simple: true }), 1234);
    const defaults = track(new SqliteEventStore({ path: freshPath() }));
    assert.equal(defaults.database.pragma('busy_timeout', { simple: true }), 5000);
  });

  it('works on a private in-memory database', async () => {
    const store = track(new SqliteEventStore({ path: ':memory:' }));
    await store.append('s', [{ type: 'A', data: 1 }]);
    assert.deepEqual((await collect(store.readAll())).map((e) => e.data), [1]);
  });

  it('uses a handle it is given, configures it, and leaves it open on close', async () => {
    const path = freshPath();
    const db = rawHandle(path);
    const store = new SqliteEventStore({ database: db });
    assert.equal(store.database, db);
    assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    const written = await store.append('s', [{ type: 'A', data: { x: 1 } }]);
    await store.close();
    assert.equal(db.open, true);
    assert.equal(db.prepare('SELECT data FROM eskit_events WHERE position = ?').pluck().get(written.position), '{"x":1}');
    await expectCode(() => store.headPosition(), ErrorCode.StoreClosed);
  });

  it('closes a handle it opened itself', async () => {
    const store = new SqliteEventStore({ path: freshPath() });
    await store.close();
    assert.equal(store.database.open, false);
    await expectCode(() => store.migrate(), ErrorCode.StoreClosed);
    await expectCode(() => store.append('s', [{ type: 'A', data: 1 }]), ErrorCode.StoreClosed);
    await store.close();
  });

  it('reports ESKIT_STORE_CLOSED when the owner of a shared handle closed it', async () => {
    const db = new Database(freshPath());
    const store = track(new SqliteEventStore({ database: db }));
    await store.append('s', [{ type: 'A', data: 1 }]);
    db.close();
    await expectCode(() => store.append('s', [{ type: 'A', data: 2 }]), ErrorCode.StoreClosed);
    await expectCode(() => collect(store.readAll()), ErrorCode.StoreClosed);
    await expectCode(() => store.streamVersion('s'), ErrorCode.StoreClosed);
    assert.throws(() => new SqliteEventStore({ database: db }), (e: unknown) => isEskitError(e, ErrorCode.InvalidArgument));
  });

  it('returns integers as numbers even when the shared handle defaults to BigInt', async () => {
    const db = rawHandle(freshPath());
    db.defaultSafeIntegers(true);
    const store = new SqliteEventStore({ database: db });
    const written = await store.append('s', [{ type: 'A', data: 1 }, { type: 'B', data: 2 }]);
    assert.deepEqual(written.events.map((e) => e.position), [1, 2]);
    const [first] = await collect(store.readAll());
    assert.equal(typeof first?.position, 'number');
    assert.equal(typeof first?.streamVersion, 'number');
    assert.equal(first?.timestamp.getTime(), written.events[0]?.timestamp.getTime());
    assert.equal(await store.headPosition(), 2);
    assert.equal(await store.streamVersion('s'), 2);
  });
});

describe('SqliteEventStore: migrations', () => {
  it('migrates on construction, records each version once, and is idempotent', async () => {
    const path = freshPath();
    const store = track(new SqliteEventStore({ path }));
    const latest = SQLITE_MIGRATIONS[SQLITE_MIGRATIONS.length - 1]?.version;
    assert.equal(sqliteSchemaVersion(store.database), latest);
    assert.deepEqual(await store.migrate(), []);
    const again = track(new SqliteEventStore({ path }));
    assert.deepEqual(await again.migrate(), []);
    const rows = store.database.prepare('SELECT version, name, applied_at FROM eskit_migrations ORDER BY version').all() as {
      version: number;
      name: string;
      applied_at: number;
    }[];
    assert.deepEqual(
      rows.map((r) => r.version),
      SQLITE_MIGRATIONS.map((m) => m.version),
    );
    assert.ok(rows.every((r) => Number.isInteger(r.applied_at) && r.applied_at > 0));
    const tables = store.database.prepare("SELECT name FROM sqlite_master WHERE type IN ('table', 'index') AND name LIKE 'eskit_%' ORDER BY name").pluck().all();
    assert.deepEqual(tables, [
      'eskit_archived_events',
      'eskit_archived_events_stream',
      'eskit_checkpoints',
      'eskit_completions',
      'eskit_dead_letters',
      'eskit_dead_letters_source_status_id',
      'eskit_deleted_events',
      'eskit_deleted_events_stream',
      'eskit_events',
      'eskit_events_category_position',
      'eskit_events_type_position',
      'eskit_leases',
      'eskit_members',
      'eskit_migrations',
      'eskit_runner_status',
      'eskit_snapshots',
      'eskit_subject_keys',
      'eskit_subject_keys_live',
      'eskit_subject_keys_subject',
    ]);
  });

  it('with migrate: false, touches nothing until migrate() is called, and says so', async () => {
    const store = track(new SqliteEventStore({ path: freshPath(), migrate: false }));
    assert.equal(sqliteSchemaVersion(store.database), 0);
    const error = await expectCode(() => store.append('s', [{ type: 'A', data: 1 }]), ErrorCode.Migration);
    assert.match(error.message, /migrate\(\)/);
    await expectCode(() => store.headPosition(), ErrorCode.Migration);
    assert.deepEqual(await store.migrate(), SQLITE_MIGRATIONS.map((m) => m.version));
    const written = await store.append('s', [{ type: 'A', data: 1 }]);
    assert.equal(written.position, 1);
  });

  it('two handles migrating one file: the second finds the work done', async () => {
    const path = freshPath();
    const a = track(new SqliteEventStore({ path, migrate: false }));
    const b = track(new SqliteEventStore({ path, migrate: false }));
    const [first, second] = await Promise.all([a.migrate(), b.migrate()]);
    const versions = SQLITE_MIGRATIONS.map((m) => m.version);
    assert.deepEqual([...(first ?? []), ...(second ?? [])].sort((x, y) => x - y), versions);
    assert.equal(a.database.prepare('SELECT COUNT(*) FROM eskit_migrations').pluck().get(), versions.length);
  });

  it('several processes migrating new files at once: each version applied exactly once', async () => {
    const FILES = 60;
    const base = freshPath();
    const paths = Array.from({ length: FILES }, (_, i) => `${base}-${i}`);
    files.push(...paths);
    const results = (await runChildrenTogether([1, 2, 3].map(() => ['migrate', base, String(FILES)]))) as { applied: number[][] }[];
    const versions = SQLITE_MIGRATIONS.map((m) => m.version);
    for (const [i, path] of paths.entries()) {
      const applied = results.flatMap((r) => r.applied[i] ?? []).sort((x, y) => x - y);
      assert.deepEqual(applied, versions, `file ${i}: each migration applied by exactly one process`);
      const db = new Database(path);
      try {
        assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
        assert.deepEqual(db.prepare('SELECT version FROM eskit_migrations ORDER BY version').pluck().all(), versions);
      } finally {
        db.close();
      }
    }
  });

  it('a failing migration is rolled back entirely and reported as ESKIT_MIGRATION', async () => {
    const store = track(new SqliteEventStore({ path: freshPath() }));
    const broken = [...SQLITE_MIGRATIONS, { version: SQLITE_MIGRATIONS.length + 1, name: 'broken', sql: 'CREATE TABLE eskit_half (a); SELECT * FROM missing_table;' }];
    assert.throws(
      () => migrateSqlite(store.database, broken),
      (e: unknown) => isEskitError(e, ErrorCode.Migration) && /broken/.test((e as Error).message),
    );
    assert.equal(sqliteSchemaVersion(store.database), SQLITE_MIGRATIONS.length);
    assert.equal(store.database.prepare("SELECT COUNT(*) FROM sqlite_master WHERE name = 'eskit_half'").pluck().get(), 0);
  });

  it('a database already migrated further by a newer eskit is left alone', async () => {
    const path = freshPath();
    const first = track(new SqliteEventStore({ path }));
    first.database.prepare('INSERT INTO eskit_migrations (version, name, applied_at) VALUES (99, ?, ?)').run('from the future', Date.now());
    const second = track(new SqliteEventStore({ path }));
    assert.deepEqual(await second.migrate(), []);
    await second.append('s', [{ type: 'A', data: 1 }]);
    assert.equal(await first.headPosition(), 1);
  });
});

describe('SqliteEventStore: storage details', () => {
  it('never reuses a position, even after the newest row is deleted by hand', async () => {
    const store = track(new SqliteEventStore({ path: freshPath() }));
    await store.append('s', [{ type: 'A', data: 1 }, { type: 'A', data: 2 }, { type: 'A', data: 3 }]);
    store.database.prepare('DELETE FROM eskit_events WHERE position = 3').run();
    const next = await store.append('t', [{ type: 'A', data: 4 }]);
    assert.equal(next.position, 4);
  });

  it('stores timestamps as integer milliseconds and JSON as text', async () => {
    const store = track(new SqliteEventStore({ path: freshPath() }));
    const written = await store.append('s', [{ type: 'A', data: { n: 1 }, metadata: { correlationId: 'c' } }]);
    const row = store.database.prepare('SELECT * FROM eskit_events').get() as Record<string, unknown>;
    assert.equal(row.created_at, written.events[0]?.timestamp.getTime());
    assert.equal(row.data, '{"n":1}');
    assert.equal(row.metadata, '{"correlationId":"c"}');
    assert.equal(row.stream_id, 's');
    assert.equal(row.stream_version, 1);
    assert.equal(row.event_id, written.events[0]?.id);
  });

  it('type-filtered reads page correctly with one, several and very many types', async () => {
    const store = track(new SqliteEventStore({ path: freshPath(), pageSize: 3 }));
    const types = Array.from({ length: 40 }, (_, i) => `T${i}`);
    for (let i = 0; i < 200; i++) {
      // Uneven mix: T0 is common, the others rare, so per-type ranges interleave irregularly.
      const type = i % 3 === 0 ? 'T0' : (types[(i * 7) % types.length] as string);
      await store.append(`s${i % 5}`, [{ type, data: i }]);
    }
    const everything = await collect(store.readAll());
    const filters: string[][] = [['T0'], ['T1', 'T0'], ['T5', 'T9', 'T0', 'T5'], types.slice(0, 35), ['missing', 'T3']];
    for (const filter of filters) {
      for (const after of [0, 17, 150]) {
        const expected = everything.filter((e) => e.position > after && filter.includes(e.type)).map((e) => e.position);
        const actual = (await collect(store.readAll({ types: filter, after }))).map((e) => e.position);
        assert.deepEqual(actual, expected, `types ${filter.join(',')} after ${after}`);
        const limited = (await collect(store.readAll({ types: filter, after, limit: 4 }))).map((e) => e.position);
        assert.deepEqual(limited, expected.slice(0, 4), `types ${filter.join(',')} after ${after} limit 4`);
      }
    }
  });
});

describe('SqliteEventStore: locking', () => {
  it('fails with ESKIT_STORE_BUSY, writing nothing, when another connection holds the write lock past the timeout', async () => {
    const path = freshPath();
    const store = track(new SqliteEventStore({ path, busyTimeoutMs: 50 }));
    await store.append('s', [{ type: 'A', data: 1 }]);
    const other = rawHandle(path);
    other.exec('BEGIN IMMEDIATE');
    const error = await expectCode(() => store.append('s', [{ type: 'A', data: 2 }]), 'ESKIT_STORE_BUSY');
    assert.match(error.message, /busy timeout \(50 ms\)/);
    // Readers are not blocked by a writer in WAL mode.
    assert.equal(await store.streamVersion('s'), 1);
    other.exec('ROLLBACK');
    const written = await store.append('s', [{ type: 'A', data: 3 }]);
    assert.equal(written.nextExpectedVersion, 2);
    assert.deepEqual((await collect(store.readStream('s'))).map((e) => e.data), [1, 3]);
  });

  it('two handles on one file see each other’s writes at once', async () => {
    const path = freshPath();
    const a = track(new SqliteEventStore({ path }));
    const b = track(new SqliteEventStore({ path }));
    const first = await a.append('s', [{ type: 'A', data: 1 }]);
    assert.equal(await b.headPosition(), first.position);
    const second = await b.append('s', [{ type: 'A', data: 2 }], { expectedVersion: 1 });
    assert.deepEqual((await collect(a.readStream('s'))).map((e) => e.data), [1, 2]);
    await expectCode(() => a.append('s', [{ type: 'A', data: 3 }], { expectedVersion: 1 }), ErrorCode.Concurrency);
    assert.equal(second.position, 2);
  });

  it('processes appending to one file at once lose nothing, duplicate nothing, and a live reader skips nothing', async () => {
    const path = freshPath();
    const store = track(new SqliteEventStore({ path }));
    const PER_CHILD = 150;
    const names = ['p1', 'p2', 'p3'];

    // A subscriber-like reader polling from its checkpoint while the children write.
    const seen: Recorded[] = [];
    let checkpoint = 0;
    let writing = true;
    let pollsWithNews = 0;
    const poll = async () => {
      const before = checkpoint;
      for await (const event of store.readAll({ after: checkpoint, raw: true })) {
        assert.ok(event.position > checkpoint, `position ${event.position} appeared after checkpoint ${checkpoint}`);
        seen.push(event);
        checkpoint = event.position;
      }
      if (writing && checkpoint > before) pollsWithNews++;
    };
    const reader = (async () => {
      while (writing) {
        await poll();
        await new Promise((resolve) => setImmediate(resolve));
      }
      await poll();
    })();

    let results: { own: number[]; shared: number[]; conflicts: number }[];
    try {
      results = (await runChildrenTogether(names.map((name) => ['append', path, String(PER_CHILD), name]))) as typeof results;
    } finally {
      writing = false;
      await reader;
    }

    const all = await collect(store.readAll({ raw: true }));
    const total = names.length * PER_CHILD * 2;
    assert.equal(all.length, total);
    assert.deepEqual(
      all.map((e) => e.position),
      Array.from({ length: total }, (_, i) => i + 1),
      'positions are 1..N without gaps or repeats',
    );
    assert.equal(new Set(all.map((e) => e.id)).size, total);
    // The live reader, checkpointing bare positions, saw exactly the log, while it was being written.
    assert.ok(pollsWithNews >= 2, `the reader should have caught up several times during the writes, did ${pollsWithNews}`);
    assert.deepEqual(
      seen.map((e) => e.position),
      all.map((e) => e.position),
    );

    for (const [index, name] of names.entries()) {
      const result = results[index] as (typeof results)[number];
      assertStrictlyIncreasing(result.own, `positions returned to ${name}`);
      assertStrictlyIncreasing(result.shared, `shared positions returned to ${name}`);
      const own = await collect(store.readStream(`own-${name}`));
      assert.deepEqual(
        own.map((e) => (e.data as { i: number }).i),
        Array.from({ length: PER_CHILD }, (_, i) => i),
      );
      assert.deepEqual(own.map((e) => e.position), result.own);
    }
    const shared = await collect(store.readStream('shared'));
    assert.equal(shared.length, names.length * PER_CHILD);
    assert.deepEqual(
      shared.map((e) => e.streamVersion),
      Array.from({ length: shared.length }, (_, i) => i + 1),
    );
    assertStrictlyIncreasing(
      shared.map((e) => e.position),
      'shared stream positions',
    );
    for (const name of names) {
      const mine = shared.filter((e) => (e.data as { name: string }).name === name).map((e) => (e.data as { i: number }).i);
      assert.deepEqual(mine, Array.from({ length: PER_CHILD }, (_, i) => i), `${name}'s shared events, once each, in order`);
    }
  });
});
