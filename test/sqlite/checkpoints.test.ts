import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import type { CheckpointStore } from '../../src/core/checkpoint.js';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import type { FencedError } from '../../src/core/errors.js';
import { MemoryCheckpointStore } from '../../src/memory/index.js';
import { saveSqliteCheckpoint, SqliteCheckpointStore, SqliteEventStore } from '../../src/sqlite/index.js';
import type { Op } from './fixtures/checkpoint-ops.js';
import { ChildNode, fixturePath } from '../support/processes.js';
import { removeDatabase, tempDatabasePath } from './helpers.js';

const closers: Array<() => unknown> = [];
const files: string[] = [];

afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
  for (const path of files.splice(0)) removeDatabase(path);
});

function fresh(): { path: string; store: SqliteEventStore; checkpoints: SqliteCheckpointStore } {
  const path = tempDatabasePath('checkpoints');
  files.push(path);
  const store = new SqliteEventStore({ path });
  closers.push(() => store.close());
  return { path, store, checkpoints: new SqliteCheckpointStore({ store }) };
}

function row(db: Database.Database, name: string): { position: number | null; token: number } | undefined {
  return db.prepare('SELECT position, fencing_token AS token FROM eskit_checkpoints WHERE name = ?').get(name) as
    | { position: number | null; token: number }
    | undefined;
}

/** Asserts that `fn` fails with a FencedError carrying exactly these tokens. */
async function expectFenced(fn: () => unknown, name: string, token: number, current: number): Promise<void> {
  try {
    await fn();
  } catch (error) {
    assert.ok(isEskitError(error, ErrorCode.Fenced), `expected ESKIT_FENCED, got ${String(error)}`);
    const fenced = error as FencedError;
    assert.deepEqual([fenced.lockName, fenced.fencingToken, fenced.currentToken], [name, token, current]);
    assert.match(fenced.message, new RegExp(`token ${current}; this node's token ${token} is stale`));
    return;
  }
  assert.fail('expected ESKIT_FENCED, but the call succeeded');
}

const isCode = (code: string) => (error: unknown) => isEskitError(error, code);

// The behaviour every CheckpointStore shares is in the conformance suite (checkpoint-conformance.test.ts);
// this is SQLite's own.

describe('SqliteCheckpointStore: fencing', () => {
  it('behaves exactly like MemoryCheckpointStore over a long random sequence of operations', async () => {
    const { checkpoints } = fresh();
    const memory = new MemoryCheckpointStore();
    let seed = 20240611;
    const random = (n: number): number => {
      // mulberry32: a fixed sequence, so a failure can be replayed.
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return (((t ^ (t >>> 14)) >>> 0) / 4294967296) * n;
    };
    const outcome = async (store: CheckpointStore, op: Op): Promise<unknown> => {
      try {
        if (op.op === 'load') return { value: await store.load(op.name) };
        if (op.op === 'claim') return { value: await store.claim(op.name, op.token) };
        await store.save(op.name, op.position, op.token === undefined ? undefined : { fencingToken: op.token });
        return { value: 'saved' };
      } catch (error) {
        const fenced = error as FencedError;
        return { code: fenced.code, token: fenced.fencingToken, current: fenced.currentToken };
      }
    };
    let fencedCount = 0;
    for (let i = 0; i < 600; i++) {
      const name = ['a', 'b', 'c'][Math.floor(random(3))] as string;
      const kind = Math.floor(random(3));
      const token = Math.floor(random(8));
      const op: Op =
        kind === 0
          ? { op: 'load', name }
          : kind === 1
            ? { op: 'claim', name, token }
            : { op: 'save', name, position: Math.floor(random(1000)), token: random(4) < 1 ? undefined : token };
      const expected = await outcome(memory, op);
      assert.deepEqual(await outcome(checkpoints, op), expected, `operation ${i}: ${JSON.stringify(op)}`);
      if ((expected as { code?: string }).code !== undefined) fencedCount++;
    }
    assert.ok(fencedCount > 50, `the sequence exercised fencing (${fencedCount} rejections)`);
    const strip = (list: Awaited<ReturnType<CheckpointStore['list']>>) =>
      list.map(({ name, position, fencingToken }) => ({ name, position, fencingToken })).sort((x, y) => x.name.localeCompare(y.name));
    assert.deepEqual(strip(await checkpoints.list()), strip(await memory.list()));
  });

  it('list shows saved checkpoints only, by name, with their token and when they were written', async () => {
    const { checkpoints } = fresh();
    const before = Date.now();
    await checkpoints.save('b', 2, { fencingToken: 4 });
    await checkpoints.save('a', 1);
    await checkpoints.claim('c', 9);
    const after = Date.now();
    const list = await checkpoints.list();
    assert.deepEqual(
      list.map(({ name, position, fencingToken }) => ({ name, position, fencingToken })),
      [
        { name: 'a', position: 1, fencingToken: 0 },
        { name: 'b', position: 2, fencingToken: 4 },
      ],
    );
    for (const info of list) {
      assert.ok(info.updatedAt instanceof Date);
      assert.ok(info.updatedAt.getTime() >= before - 5 && info.updatedAt.getTime() <= after + 5, 'written now (by the database clock)');
    }
  });

  it('fences across processes: another process with a stale token is rejected, a newer one wins', { timeout: 30_000 }, async () => {
    const { path, store, checkpoints } = fresh();
    await checkpoints.claim('job', 5);
    await checkpoints.save('job', 10, { fencingToken: 5 });
    const ops: Op[] = [
      { op: 'save', name: 'job', position: 11, token: 4 },
      { op: 'claim', name: 'job', token: 4 },
      { op: 'load', name: 'job' },
      { op: 'claim', name: 'job', token: 6 },
      { op: 'save', name: 'job', position: 12, token: 6 },
    ];
    const child = new ChildNode<unknown[]>('ops', fixturePath('./fixtures/checkpoint-ops.ts', import.meta.url), [path, JSON.stringify(ops)]);
    const outcomes = await child.waitFor(() => true, 'the outcomes', { timeoutMs: 20_000 });
    assert.equal((await child.exited).code, 0, child.stderr);
    assert.deepEqual(outcomes, [
      { error: ErrorCode.Fenced, currentToken: 5 },
      { error: ErrorCode.Fenced, currentToken: 5 },
      { value: 10 },
      { value: 10 },
      { value: null },
    ]);
    await expectFenced(() => checkpoints.save('job', 13, { fencingToken: 5 }), 'job', 5, 6);
    assert.deepEqual(row(store.database, 'job'), { position: 12, token: 6 });
  });
});

describe('saveSqliteCheckpoint: a checkpoint inside your own transaction', () => {
  it('commits with the view\'s writes, or not at all', async () => {
    const { store, checkpoints } = fresh();
    const db = store.database;
    db.exec('CREATE TABLE view (id INTEGER PRIMARY KEY, position INTEGER NOT NULL)');
    const insert = db.prepare('INSERT INTO view (position) VALUES (?)');
    const project = db.transaction((position: number, token: number) => {
      insert.run(position);
      saveSqliteCheckpoint(db, 'view', position, token);
    });
    const count = () => db.prepare('SELECT COUNT(*) FROM view').pluck().get();

    project.immediate(5, 1);
    assert.equal(count(), 1);
    assert.deepEqual(row(db, 'view'), { position: 5, token: 1 });

    // A newer leader claims: the stale one's write and its checkpoint roll back together.
    await checkpoints.claim('view', 2);
    await expectFenced(() => project.immediate(6, 1), 'view', 1, 2);
    assert.equal(count(), 1);
    assert.deepEqual(row(db, 'view'), { position: 5, token: 2 });

    // The view's own failure after the checkpoint rolls the checkpoint back too.
    const failing = db.transaction(() => {
      saveSqliteCheckpoint(db, 'view', 9, 2);
      throw new Error('the view write failed');
    });
    assert.throws(() => failing.immediate(), /the view write failed/);
    assert.deepEqual(row(db, 'view'), { position: 5, token: 2 });

    project.immediate(7, 2);
    assert.equal(count(), 2);
    assert.equal(await checkpoints.load('view'), 7);
  });

  it('works outside a transaction, and checks its arguments', () => {
    const { store } = fresh();
    const db = store.database;
    saveSqliteCheckpoint(db, 'plain', 3);
    assert.deepEqual(row(db, 'plain'), { position: 3, token: 0 });
    const invalid = isCode(ErrorCode.InvalidArgument);
    assert.throws(() => saveSqliteCheckpoint(db, '', 1), invalid);
    assert.throws(() => saveSqliteCheckpoint(db, 'x', -1), invalid);
    assert.throws(() => saveSqliteCheckpoint(db, 'x', 1.5), invalid);
    assert.throws(() => saveSqliteCheckpoint(db, 'x', 1, -1), invalid);
    assert.throws(() => saveSqliteCheckpoint(db, 'x', Number.MAX_SAFE_INTEGER + 1), invalid);
    assert.equal(row(db, 'x'), undefined);
  });
});

describe('SqliteCheckpointStore: connections and errors', () => {
  it('needs exactly one of store or database', () => {
    const { store } = fresh();
    const invalid = isCode(ErrorCode.InvalidArgument);
    assert.throws(() => new SqliteCheckpointStore({}), invalid);
    assert.throws(() => new SqliteCheckpointStore({ store, database: store.database }), invalid);
    assert.throws(() => new SqliteCheckpointStore({ path: 'x.db' } as never), invalid);
  });

  it('migrates a handle it is given, and says what to do when the tables are missing', async () => {
    const path = tempDatabasePath('checkpoints');
    files.push(path);
    const db = new Database(path);
    closers.push(() => db.close());
    const unmigrated = new SqliteCheckpointStore({ database: db, migrate: false });
    await assert.rejects(unmigrated.load('x'), (error) => isEskitError(error, ErrorCode.Migration) && /migrate\(\)/.test((error as Error).message));
    const checkpoints = new SqliteCheckpointStore({ database: db });
    await checkpoints.save('x', 1);
    assert.equal(await unmigrated.load('x'), 1, 'the same handle works once migrated');
    assert.equal(db.pragma('journal_mode', { simple: true }), 'wal', 'configured like an owned connection');
  });

  it('reports a closed store as ESKIT_STORE_CLOSED', async () => {
    const { store, checkpoints } = fresh();
    await checkpoints.save('x', 1);
    await store.close();
    await assert.rejects(checkpoints.load('x'), isCode(ErrorCode.StoreClosed));
    await assert.rejects(checkpoints.save('x', 2), isCode(ErrorCode.StoreClosed));
    await assert.rejects(checkpoints.claim('x', 1), isCode(ErrorCode.StoreClosed));
  });
});
