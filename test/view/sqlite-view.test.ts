import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import { silentLogger } from '../../src/core/logger.js';
import { sqlite, SqliteDeadLetterStore } from '../../src/sqlite/index.js';
import type { SqliteBackend, SqliteEventStore } from '../../src/sqlite/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { SqlView, waitFor } from '../../src/view/index.js';
import type { RebuildResult, ViewChange } from '../../src/view/index.js';
import { removeDatabase, tempDatabasePath } from '../sqlite/helpers.js';
import { appendMany, counted, expectedSqliteCounter, fixedLeases, other, readSqliteCounter, sqliteCounter } from './helpers.js';
import type { TestEvent } from './helpers.js';

const closers: Array<() => unknown> = [];
const files: string[] = [];

afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
  for (const path of files.splice(0)) removeDatabase(path);
});

function fresh(path = tempDatabasePath('view')): { path: string; backend: SqliteBackend<TestEvent>; store: SqliteEventStore<TestEvent> } {
  if (!files.includes(path)) files.push(path);
  const backend = sqlite<TestEvent>({ path });
  closers.push(() => backend.close());
  return { path, backend, store: backend.store };
}

function track<V extends { stop(): Promise<void> }>(view: V): V {
  closers.push(() => view.stop());
  return view;
}

function checkpointRow(db: Database.Database, name: string): { position: number | null; token: number } | undefined {
  return db.prepare('SELECT position, fencing_token AS token FROM eskit_checkpoints WHERE name = ?').get(name) as
    | { position: number | null; token: number }
    | undefined;
}

describe('SqlView on SQLite: exactly once', () => {
  it('applies every event of its types once, and commits the checkpoint with the writes', async () => {
    const { backend, store } = fresh();
    const head = await appendMany(store, 420);
    const view = track(sqliteCounter(backend, { batchSize: 32 }));
    await view.start();
    await view.waitFor(head);
    assert.deepEqual(readSqliteCounter(store.database), expectedSqliteCounter(store.database));
    // The checkpoint sits on the last event of the view's types (the runner never reads the others).
    const lastCounted = store.database.prepare("SELECT max(position) FROM eskit_events WHERE type = 'Counted'").pluck().get() as number;
    assert.equal(checkpointRow(store.database, 'counter')?.position, lastCounted);
    assert.equal((await view.status()).state, 'leading');
    assert.equal(await view.storedVersion(), 1);
    assert.equal(view.table('counts'), '"counts"');
  });

  it('start() twice is an error; stop() twice is fine; a restart resumes from the checkpoint without re-applying', async () => {
    const { backend, store } = fresh();
    await appendMany(store, 100);
    const view = track(sqliteCounter(backend));
    await view.start();
    await assert.rejects(view.start(), (error: unknown) => isEskitError(error, ErrorCode.AlreadyStarted));
    await view.waitFor(await store.headPosition());
    await view.stop();
    await view.stop();
    const more = await appendMany(store, 60);
    await view.start();
    await view.waitFor(more);
    assert.deepEqual(readSqliteCounter(store.database), expectedSqliteCounter(store.database));
  });

  it('rejects bad setups with clear errors', () => {
    const { backend } = fresh();
    const base = { name: 'v', backend, evolve: () => undefined };
    assert.throws(() => new SqlView({ ...base, setup: { version: 0, statements: () => [] } }), /setup.version must be a positive integer/);
    assert.throws(() => new SqlView({ ...base, setup: { version: 1, statements: (t) => [`CREATE TABLE ${t('Bad-Name')} (x)`] } }), /lower-case SQL identifier/);
    assert.throws(() => new SqlView({ ...base, setup: { version: 1, statements: (t) => [`CREATE TABLE ${t('x__rebuild_1')} (x)`] } }), /__rebuild_/);
  });

  it('an evolve that returns a promise is refused (it cannot run inside a SQLite transaction)', async () => {
    const { backend, store } = fresh();
    await store.append('s', [counted(1)]);
    const view = track(
      new SqlView({
        name: 'async',
        backend,
        logger: silentLogger,
        setup: { version: 1, statements: (t) => [`CREATE TABLE ${t('x')} (p INTEGER)`] },
        evolve: (async () => undefined) as unknown as () => void,
      }),
    );
    await view.start();
    const status = await view.whenStopped();
    assert.equal(status.state, 'failed');
    assert.match(String(status.error?.message), /evolve returned a promise/);
  });
});

describe('SqlView on SQLite: a failing evolve', () => {
  it('rolls the transaction back and, without a dead-letter store, stops the view (state failed) at the event', async () => {
    const { backend, store } = fresh();
    await store.append('a', [counted(1), counted(2), counted(3)]);
    const bad = (await store.append('a', [counted(4, true)])).position;
    await store.append('a', [counted(5), counted(6)]);
    const view = track(sqliteCounter(backend, { throwOnBad: true, batchSize: 10 }));
    await view.start();
    const status = await view.whenStopped();
    assert.equal(status.state, 'failed');
    assert.ok(isEskitError(status.error, ErrorCode.HandlerFailed), String(status.error));
    assert.match(String(status.error?.message), new RegExp(`position ${bad}`));
    // The events before it were committed (the batch was split to pin the failure); the bad event's own
    // `seen` row, written before the throw, was rolled back with everything after it.
    assert.deepEqual(readSqliteCounter(store.database), expectedSqliteCounter(store.database, bad - 1));
    assert.equal(checkpointRow(store.database, 'counter')?.position, bad - 1);
  });

  it('with a dead-letter store, stores the event, skips it, and goes on', async () => {
    const { backend, store } = fresh();
    const deadLetters = new SqliteDeadLetterStore({ store });
    await store.append('a', [counted(1), counted(2)]);
    const bad = (await store.append('b', [counted(40, true)])).position;
    const head = (await store.append('a', [counted(3), other(), counted(5)])).position;
    const view = track(sqliteCounter(backend, { throwOnBad: true, deadLetters }));
    await view.start();
    await view.waitFor(head);
    const letters = await deadLetters.list({ source: 'counter' });
    assert.deepEqual(
      letters.map((letter) => [letter.eventPosition, letter.stage, letter.streamId]),
      [[bad, 'handler', 'b']],
    );
    assert.match(letters[0]?.attempts[0]?.error ?? '', /bad event at/);
    const state = readSqliteCounter(store.database);
    assert.deepEqual(state, { seen: 4, distinct: 4, events: 4, total: 11 });
    assert.equal((await view.status()).state, 'leading');
  });
});

describe('SqlView on SQLite: fencing', () => {
  it("rejects a stale leader's batch (checkpoint fenced) and rolls back its view writes", async () => {
    const { path, backend, store } = fresh();
    const { backend: otherBackend } = fresh(path);
    await appendMany(store, 20, { otherEvery: 1000 });
    const attempts: number[] = [];
    const stale = track(sqliteCounter(backend, { leaderLock: fixedLeases([1]), before: (event) => attempts.push(event.position) }));
    await stale.start();
    await stale.waitFor(20);
    // A second node takes over with a newer token while the first still believes it leads.
    const leader = track(sqliteCounter(otherBackend, { leaderLock: fixedLeases([2]) }));
    await leader.start();
    await waitUntil(async () => (await leader.status()).state === 'leading', { message: 'the new leader to lead' });
    assert.equal(checkpointRow(store.database, 'counter')?.token, 2);

    const { position: head } = await store.append('late', [counted(100), counted(200), counted(300)]);
    await leader.waitFor(head);
    await waitUntil(async () => (await stale.status()).state === 'standby', { message: 'the stale node to give up' });
    assert.ok(attempts.includes(head - 2), 'the stale node did try to apply the new events');
    // Each event once: the stale node's writes were rolled back with its refused checkpoint.
    assert.deepEqual(readSqliteCounter(store.database), expectedSqliteCounter(store.database));
    assert.deepEqual(checkpointRow(store.database, 'counter'), { position: head, token: 2 });
  });
});

describe('SqlView on SQLite: waitFor', () => {
  it('resolves after an append once the view shows it; an event of other types resolves at once', async () => {
    const { backend, store } = fresh();
    const view = track(sqliteCounter(backend));
    await view.start();
    for (let i = 1; i <= 20; i++) {
      const { position } = await store.append(`w-${i % 3}`, [counted(i)]);
      await waitFor(view, position, { timeoutMs: 2000 });
      assert.equal(readSqliteCounter(store.database).seen, i, `event ${i} is visible right after waitFor`);
    }
    // The checkpoint stays below an ignored event, but the view already reflects it.
    const { position } = await store.append('o', [other()]);
    await waitFor(view, position, { timeoutMs: 200 });
    assert.ok((checkpointRow(store.database, 'counter')?.position ?? 0) < position);
  });

  it('times out with ESKIT_TIMEOUT when nothing runs the view, and honours an abort signal', async () => {
    const { backend, store } = fresh();
    const view = sqliteCounter(backend);
    const { position } = await store.append('s', [counted(1)]);
    const started = performance.now();
    await assert.rejects(view.waitFor(position, { timeoutMs: 60 }), (error: unknown) => {
      assert.ok(isEskitError(error, ErrorCode.Timeout), String(error));
      assert.match((error as Error).message, /view "counter" reaching position 1 .* did not finish within 60 ms/);
      return true;
    });
    assert.ok(performance.now() - started < 1000);
    const controller = new AbortController();
    const waiting = view.waitFor(position, { timeoutMs: 10_000, signal: controller.signal });
    controller.abort(new Error('gave up'));
    await assert.rejects(waiting, /gave up/);
    await assert.rejects(view.waitFor(-1), (error: unknown) => isEskitError(error, ErrorCode.InvalidArgument));
  });

  it('follows a view that another instance (another process) runs, by reading its checkpoint', async () => {
    const { path, backend, store } = fresh();
    const { backend: readerBackend, store: readerStore } = fresh(path);
    const runner = track(sqliteCounter(backend));
    await runner.start();
    const observer = sqliteCounter(readerBackend, { checkpointPollMs: 10 });
    const changes: ViewChange[] = [];
    const unsubscribe = observer.changes.subscribe((change) => void changes.push(change));
    closers.push(unsubscribe);
    for (let i = 0; i < 5; i++) {
      const { position } = await store.append('remote', [counted(i + 1)]);
      await observer.waitFor(position, { timeoutMs: 2000 });
      assert.equal(readSqliteCounter(readerStore.database).seen, i + 1);
    }
    await waitUntil(() => changes.some((change) => change.position === 5), { message: 'a change seen from the other instance' });
    assert.ok(changes.every((change) => change.view === 'counter'));
  });
});

describe('SqlView on SQLite: change feed', () => {
  it('notifies 1,000 listeners with the affected keys while one iterator never reads, and the view keeps going', async () => {
    const { backend, store } = fresh();
    const view = track(sqliteCounter(backend, { keysOf: (event) => event.streamId, maxKeys: 100 }));
    await view.start();
    // What each listener learnt: the keys, or "everything" (when more than maxKeys changed in one go).
    const seen = Array.from({ length: 1000 }, () => ({ keys: new Set<string>(), everything: false, calls: 0 }));
    const unsubscribes = seen.map((listener) =>
      view.changes.subscribe((change) => {
        listener.calls += 1;
        if (change.keys === undefined) listener.everything = true;
        else change.keys.forEach((key) => listener.keys.add(key));
      }),
    );
    closers.push(() => unsubscribes.forEach((unsubscribe) => unsubscribe()));
    const stuck = view.changes.subscribe();
    closers.push(() => stuck.return?.());
    assert.equal(view.changes.listenerCount, 1001);

    let head = 0;
    for (let i = 0; i < 120; i++) {
      head = (await store.append(`cart-${i}`, [counted(1)])).position;
      if (i % 10 === 9) await view.waitFor(head);
    }
    await waitUntil(() => seen.every((listener) => listener.everything || listener.keys.size === 120), {
      message: 'every listener to hear of every cart',
    });
    assert.ok(seen.every((listener) => listener.calls === (seen[0]?.calls ?? 0) && listener.calls >= 1), 'each listener got every (debounced) change');
    // The iterator that never read holds one merged change; past maxKeys it says "everything".
    const first = await stuck.next();
    assert.equal(first.done, false);
    assert.equal(first.value?.keys, undefined);
    assert.equal(first.value?.position, head);
  });
});

describe('SqlView on SQLite: rebuild', () => {
  it('rebuilds while writes continue, ends equal to a fresh build, and readers never see a half-built view', async () => {
    const { path, backend, store } = fresh();
    await appendMany(store, 1500);
    const view = track(sqliteCounter(backend, { batchSize: 20 }));
    await view.start();
    await view.waitFor(await store.headPosition());

    // Readers on their own connection: in one read transaction, the view must hold exactly the events
    // up to its checkpoint, at every moment.
    const reader = new Database(path, { readonly: true });
    closers.push(() => reader.close());
    const consistent = reader.transaction(() => {
      const checkpoint = (reader.prepare("SELECT position FROM eskit_checkpoints WHERE name = 'counter'").pluck().get() as number | null) ?? 0;
      return { checkpoint, actual: readSqliteCounter(reader), expected: expectedSqliteCounter(reader, checkpoint) };
    });
    let reading = true;
    let reads = 0;
    const violations: unknown[] = [];
    const readers = (async () => {
      while (reading) {
        const { checkpoint, actual, expected } = consistent();
        if (JSON.stringify(actual) !== JSON.stringify(expected)) violations.push({ checkpoint, actual, expected });
        reads += 1;
        await new Promise((resolve) => setImmediate(resolve));
      }
    })();
    let writing = true;
    let written = 0;
    const writer = (async () => {
      while (writing) {
        await store.append(`live-${written % 5}`, [counted(written % 9), other()]);
        written += 1;
        await new Promise((resolve) => setImmediate(resolve));
      }
    })();

    const progress: Array<{ done: number; total: number }> = [];
    const result = await view.rebuild({ batchSize: 25, onProgress: (p) => progress.push(p) });
    const writtenDuringRebuild = written;
    writing = false;
    await writer;
    const head = await store.headPosition();
    await view.waitFor(head);
    reading = false;
    await readers;

    assert.deepEqual(violations, []);
    assert.ok(reads > 10, `readers read (${reads})`);
    assert.ok(writtenDuringRebuild > 0, 'appends went on during the rebuild');
    assert.ok(result.events >= 1200 && result.generation === 1, JSON.stringify(result));
    const last = progress[progress.length - 1];
    assert.deepEqual(last, { done: result.events, total: result.events });
    assert.ok(progress.every((p, i) => p.done <= p.total && (i === 0 || p.done >= (progress[i - 1]?.done ?? 0))));
    // Equal to a fresh build of the same view.
    const freshView = track(sqliteCounter(backend, { name: 'fresh', prefix: 'fresh_' }));
    await freshView.start();
    await freshView.waitFor(head);
    assert.deepEqual(readSqliteCounter(store.database), readSqliteCounter(store.database, 'fresh_'));
    const rows = (prefix: string) => store.database.prepare(`SELECT stream, events, total FROM "${prefix}counts" ORDER BY stream`).all();
    assert.deepEqual(rows(''), rows('fresh_'));
    assert.deepEqual(readSqliteCounter(store.database), expectedSqliteCounter(store.database));
    // No shadow tables are left; the indexes live on under their generation's names.
    const objects = store.database.prepare("SELECT name FROM sqlite_master WHERE name LIKE '%rebuild%' ORDER BY name").pluck().all();
    assert.deepEqual(objects, ['seen_by_position__rebuild_1']);
    // The live runner was fenced by the swap and resumed on the new tables.
    assert.equal((await view.status()).state, 'leading');
  });

  it('a changed setup version: start() refuses, rebuildIfChanged() rebuilds, nodes on the old code stop', async () => {
    const { backend, store } = fresh();
    await appendMany(store, 200);
    const v1 = track(sqliteCounter(backend));
    await v1.start();
    await v1.waitFor(await store.headPosition());

    const v2 = track(sqliteCounter(backend, { version: 2, withMax: true }));
    await assert.rejects(v2.start(), (error: unknown) => {
      assert.ok(isEskitError(error, ErrorCode.Migration), String(error));
      assert.match((error as Error).message, /stored at setup version 1, but this code declares version 2: call rebuildIfChanged\(\)/);
      return true;
    });
    const result = await v2.rebuildIfChanged();
    assert.ok(result !== undefined);
    assert.equal(await v2.storedVersion(), 2);
    assert.equal(await v2.rebuildIfChanged(), undefined, 'nothing to do the second time');

    // The old node's next batch is fenced by the swap; on reload it finds a version it does not know.
    await store.append('after', [counted(3)]);
    const old = await v1.whenStopped();
    assert.equal(old.state, 'failed');
    assert.ok(isEskitError(old.error, ErrorCode.Migration), String(old.error));

    await v2.start();
    const { position } = await store.append('after', [counted(7)]);
    await v2.waitFor(position);
    assert.deepEqual(readSqliteCounter(store.database), expectedSqliteCounter(store.database));
    const maxN = store.database.prepare("SELECT max_n FROM counts WHERE stream = 'after'").pluck().get();
    assert.equal(maxN, 7, 'the tables are the new version');
  });

  it('a rebuild whose evolve fails leaves the live view as it was and drops its shadow tables', async () => {
    const { backend, store } = fresh();
    await store.append('a', [counted(1), counted(2)]);
    await store.append('b', [counted(3, true)]);
    const live = track(sqliteCounter(backend));
    await live.start();
    await live.waitFor(3);
    const before = readSqliteCounter(store.database);
    const broken = sqliteCounter(backend, { throwOnBad: true, retry: { maxAttempts: 1 } });
    await assert.rejects(broken.rebuild(), (error: unknown) => {
      assert.ok(isEskitError(error, ErrorCode.HandlerFailed), String(error));
      assert.match((error as Error).message, /Rebuilding view "counter" stopped at the event at position 3/);
      return true;
    });
    assert.deepEqual(readSqliteCounter(store.database), before);
    const shadows = store.database.prepare("SELECT name FROM sqlite_master WHERE name LIKE '%__rebuild_%'").pluck().all();
    assert.deepEqual(shadows, []);
    // An aborted rebuild changes nothing either.
    const controller = new AbortController();
    controller.abort(new Error('stop it'));
    await assert.rejects(live.rebuild({ signal: controller.signal }), /stop it/);
    const { position } = await store.append('a', [counted(10)]);
    await live.waitFor(position);
    assert.deepEqual(readSqliteCounter(store.database), expectedSqliteCounter(store.database));
  });

  it('a second rebuild of the same view takes over; the first stops without touching anything', async () => {
    const { backend, store } = fresh();
    await appendMany(store, 300);
    const first = sqliteCounter(backend);
    const second = sqliteCounter(backend);
    let secondRun: Promise<RebuildResult> | undefined;
    const firstRun = first.rebuild({
      batchSize: 10,
      onProgress: (p) => {
        if (p.done >= 50 && !secondRun) secondRun = second.rebuild();
      },
    });
    await assert.rejects(firstRun, (error: unknown) => {
      assert.ok(isEskitError(error, ErrorCode.Fenced), String(error));
      assert.match((error as Error).message, /Another rebuild of view "counter" started/);
      return true;
    });
    const result = await secondRun;
    assert.equal(result?.generation, 1);
    assert.ok((result?.resumedFrom ?? 0) > 0, 'the second went on from where the first had got in the shadow tables');
    const runner = track(sqliteCounter(backend));
    await runner.start();
    await runner.waitFor(await store.headPosition());
    assert.deepEqual(readSqliteCounter(store.database), expectedSqliteCounter(store.database));
  });
});
