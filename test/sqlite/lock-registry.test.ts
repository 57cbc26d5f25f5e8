import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import Database from 'better-sqlite3';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import type { Lease } from '../../src/core/lock.js';
import type { Logger } from '../../src/core/logger.js';
import { silentLogger } from '../../src/core/logger.js';
import { SqliteEventStore, SqliteLockRegistry } from '../../src/sqlite/index.js';
import type { SqliteLockRegistryOptions } from '../../src/sqlite/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { ChildNode, fixturePath, killAll } from '../support/processes.js';
import { removeDatabase, tempDatabasePath } from './helpers.js';

const LOCK_CHILD = fixturePath('./fixtures/lock-child.ts', import.meta.url);

const closers: Array<() => unknown> = [];
const children: ChildNode<Record<string, unknown>>[] = [];
const files: string[] = [];

afterEach(async () => {
  await killAll(children.splice(0));
  for (const close of closers.splice(0).reverse()) await close();
  for (const path of files.splice(0)) removeDatabase(path);
});

function freshPath(): string {
  const path = tempDatabasePath('locks');
  files.push(path);
  return path;
}

function registry(options: SqliteLockRegistryOptions): SqliteLockRegistry {
  const created = new SqliteLockRegistry({ logger: silentLogger, ...options });
  closers.push(() => created.close());
  return created;
}

function raw(path: string): Database.Database {
  const db = new Database(path);
  closers.push(() => db.close());
  return db;
}

interface LeaseRow {
  token: number;
  holder: string | null;
  expiresAt: number | null;
}

function leaseRow(db: Database.Database, name: string): LeaseRow | undefined {
  return db.prepare('SELECT fencing_token AS token, holder, expires_at AS expiresAt FROM eskit_leases WHERE name = ?').get(name) as LeaseRow | undefined;
}

function dbNow(db: Database.Database): number {
  return db.prepare("SELECT CAST(unixepoch('subsec') * 1000 AS INTEGER)").pluck().get() as number;
}

/** A pending acquire whose outcome the test can look at without awaiting it. */
function pending(promise: Promise<Lease>) {
  const state: { lease?: Lease; error?: unknown; at?: number } = {};
  const settled = promise.then(
    (lease) => {
      state.lease = lease;
      state.at = performance.now();
      return lease;
    },
    (error: unknown) => {
      state.error = error;
      throw error;
    },
  );
  settled.catch(() => {});
  return { state, settled };
}

function capturingLogger(): { logger: Logger; entries: Array<{ level: string; message: string; fields: Record<string, unknown> }> } {
  const entries: Array<{ level: string; message: string; fields: Record<string, unknown> }> = [];
  const at = (level: string) => (fields: Record<string, unknown>, message: string) => {
    entries.push({ level, message, fields });
  };
  return { logger: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') }, entries };
}

const isCode = (code: string) => (error: unknown) => isEskitError(error, code);

describe('SqliteLockRegistry: options', () => {
  it('needs exactly one connection source and sane timings', () => {
    const invalid = isCode(ErrorCode.InvalidArgument);
    assert.throws(() => new SqliteLockRegistry({}), invalid);
    const db = raw(':memory:');
    assert.throws(() => new SqliteLockRegistry({ path: ':memory:', database: db }), invalid);
    assert.throws(() => new SqliteLockRegistry({ database: db, ttlMs: 0 }), invalid);
    assert.throws(() => new SqliteLockRegistry({ database: db, ttlMs: 1000, renewIntervalMs: 1000 }), invalid);
    assert.throws(() => new SqliteLockRegistry({ database: db, pollIntervalMs: 1.5 }), invalid);
    assert.throws(() => new SqliteLockRegistry({ database: db, holderId: '' }), invalid);
    const defaults = registry({ database: db });
    assert.deepEqual([defaults.ttlMs, defaults.renewIntervalMs, defaults.pollIntervalMs], [5000, 1666, 100]);
    assert.match(defaults.holderId, new RegExp(`/${process.pid}/`));
    assert.notEqual(registry({ database: db }).holderId, defaults.holderId, 'each registry gets its own random holder id');
  });
});

describe('SqliteLockRegistry: acquiring and releasing', () => {
  it('is exclusive across registries on one file; release hands over to an in-process waiter at once; the token grows', async () => {
    const path = freshPath();
    // A poll interval of a minute: only the in-process wake-up can explain a fast handover.
    const a = registry({ path, holderId: 'a', pollIntervalMs: 60_000 });
    const b = registry({ path, holderId: 'b', pollIntervalMs: 60_000 });
    const first = await a.acquire('job');
    assert.equal(first.fencingToken, 1);
    assert.equal(first.name, 'job');
    assert.equal(first.signal.aborted, false);

    let waitingCalls = 0;
    const second = pending(b.acquire('job', { onWaiting: () => waitingCalls++ }));
    assert.equal(waitingCalls, 1, 'onWaiting is called before acquire yields');
    const held = leaseRow(a.database, 'job');
    assert.deepEqual([held?.token, held?.holder], [1, 'a']);
    assert.equal(second.state.lease, undefined);

    const releasedAt = performance.now();
    await first.release();
    const lease = await second.settled;
    assert.ok((second.state.at as number) - releasedAt < 1000, 'handed over without waiting for a poll');
    assert.equal(lease.fencingToken, 2);
    assert.equal(waitingCalls, 1, 'onWaiting is called once per acquire');
    assert.equal(first.signal.aborted, true, 'a released lease signals its holder');
    assert.ok(isEskitError(first.signal.reason, ErrorCode.LockUnavailable));
    await first.release(); // idempotent: must not touch b's lease
    const now = leaseRow(a.database, 'job');
    assert.deepEqual([now?.token, now?.holder], [2, 'b']);
    assert.equal(lease.signal.aborted, false);
    await lease.release();
    assert.deepEqual(leaseRow(a.database, 'job'), { token: 2, holder: null, expiresAt: null });
    // A released row is free at once, and the token keeps growing from it.
    assert.equal((await a.acquire('job')).fencingToken, 3);
  });

  it('is exclusive across processes, and the token grows by one with every holder', { timeout: 30_000 }, async () => {
    const path = freshPath();
    const db = raw(path);
    const store = new SqliteEventStore({ database: db }); // migrates the file
    closers.push(() => store.close());
    db.exec('CREATE TABLE holds (id INTEGER PRIMARY KEY AUTOINCREMENT, label TEXT NOT NULL, token INTEGER NOT NULL, phase TEXT NOT NULL)');
    const CYCLES = 5;
    const nodes = ['p1', 'p2', 'p3'].map((label) => new ChildNode<Record<string, unknown>>(label, LOCK_CHILD, ['cycle', path, 'shared', String(CYCLES), label]));
    children.push(...nodes);
    await Promise.all(nodes.map((node) => node.waitFor((l) => l.ev === 'ready', 'ready', { timeoutMs: 20_000 })));
    for (const node of nodes) node.send('go\n');
    const done = await Promise.all(nodes.map((node) => node.waitFor((l) => l.ev === 'done', 'done', { timeoutMs: 20_000 })));
    for (const node of nodes) assert.equal((await node.exited).code, 0, node.stderr);

    const all = done.flatMap((line) => line.tokens as number[]).sort((x, y) => x - y);
    assert.deepEqual(all, Array.from({ length: 3 * CYCLES }, (_, i) => i + 1), 'tokens 1..15, each handed out once');
    const holds = db.prepare('SELECT label, token, phase FROM holds ORDER BY id').all() as Array<{ label: string; token: number; phase: string }>;
    assert.equal(holds.length, 2 * 3 * CYCLES);
    for (let i = 0; i < holds.length; i += 2) {
      const enter = holds[i] as { label: string; token: number; phase: string };
      const exit = holds[i + 1] as { label: string; token: number; phase: string };
      assert.deepEqual([enter.phase, exit.phase], ['enter', 'exit'], `no one entered while ${enter.label} held the lock (row ${i})`);
      assert.deepEqual([exit.label, exit.token], [enter.label, enter.token]);
      assert.equal(enter.token, i / 2 + 1, 'tokens grow by one in the order the lock was held');
    }
    const locks = registry({ path });
    assert.equal((await locks.acquire('shared')).fencingToken, 3 * CYCLES + 1);
  });

});

describe('SqliteLockRegistry: expiry by the database clock', () => {
  it('a holder killed with SIGKILL is replaced once its lease expires by the database clock', { timeout: 30_000 }, async (t: TestContext) => {
    const path = freshPath();
    const holder = new ChildNode<Record<string, unknown>>('holder', LOCK_CHILD, ['hold', path, 'job', '400', '100']);
    children.push(holder);
    const acquired = await holder.waitFor((l) => l.ev === 'acquired', 'the child holding the lock', { timeoutMs: 20_000 });
    assert.equal(acquired.token, 1);
    const locks = registry({ path, holderId: 'survivor', ttlMs: 400, pollIntervalMs: 10 });
    let waited = 0;
    const next = pending(locks.acquire('job', { onWaiting: () => waited++ }));
    assert.equal(waited, 1);
    const killedAt = performance.now();
    holder.kill('SIGKILL');
    await holder.exited;
    const dead = leaseRow(locks.database, 'job'); // final: its holder is gone
    assert.deepEqual([dead?.holder, dead?.token], ['child', 1], 'still the dead holder\'s lease');
    const expiry = dead?.expiresAt as number;
    const lease = await next.settled;
    const grantedAt = dbNow(locks.database);
    assert.equal(lease.fencingToken, 2);
    assert.ok(grantedAt > expiry, `taken at ${grantedAt}, after the dead lease expired at ${expiry} (database clock)`);
    assert.ok(grantedAt - expiry < 1000, 'and soon after');
    const row = leaseRow(locks.database, 'job');
    assert.deepEqual([row?.token, row?.holder], [2, 'survivor']);
    t.diagnostic(`SIGKILL → lease taken over: ${((next.state.at as number) - killedAt).toFixed(1)} ms (ttl 400 ms, renewed every 100 ms)`);
  });

  it('an application clock far ahead does not steal an unexpired lease: only SQLite\'s clock judges expiry', async () => {
    const path = freshPath();
    const locks = registry({ path, ttlMs: 400, pollIntervalMs: 10 });
    // A lease held by a node in another process, expiring in 400 ms by the database's clock.
    locks.database
      .prepare(`INSERT INTO eskit_leases (name, fencing_token, holder, expires_at) VALUES ('job', 7, 'elsewhere', CAST(unixepoch('subsec') * 1000 AS INTEGER) + 400)`)
      .run();
    const expiry = leaseRow(locks.database, 'job')?.expiresAt as number;
    const realNow = Date.now;
    Date.now = () => realNow() + 3_600_000; // this process's clock is an hour ahead
    try {
      assert.ok(Date.now() > expiry, 'judged by the application clock, the lease would look expired');
      let waited = false;
      const lease = await locks.acquire('job', { onWaiting: () => (waited = true) });
      const grantedAt = dbNow(locks.database);
      assert.equal(waited, true, 'it waited');
      assert.ok(grantedAt > expiry, `and took the lease only after it expired by the database clock (${grantedAt} > ${expiry})`);
      assert.equal(lease.fencingToken, 8);
    } finally {
      Date.now = realNow;
    }
  });

  it('renewals keep a lease alive across many ttls while another registry waits', async () => {
    const path = freshPath();
    const holder = registry({ path, ttlMs: 400, renewIntervalMs: 50 });
    const waiter = registry({ path, ttlMs: 400, pollIntervalMs: 5 });
    const lease = await holder.acquire('job');
    const waiting = pending(waiter.acquire('job'));
    const start = performance.now();
    const seen = new Set<number>();
    await waitUntil(() => {
      seen.add(leaseRow(holder.database, 'job')?.expiresAt as number);
      return seen.size >= 8 && performance.now() - start > 2 * 400;
    }, { message: 'eight renewals over two ttls' });
    assert.equal(waiting.state.lease, undefined, 'the waiter never got it');
    assert.equal(lease.signal.aborted, false);
    await lease.release();
    assert.equal((await waiting.settled).fencingToken, 2);
  });
});

describe('SqliteLockRegistry: losing a lease', () => {
  it('a renewal that finds the row taken by another node aborts the signal, and leaves the new holder alone', async () => {
    const path = freshPath();
    const { logger, entries } = capturingLogger();
    const locks = registry({ path, ttlMs: 300, renewIntervalMs: 20, logger });
    const lease = await locks.acquire('job');
    // As if the lease had expired and a node elsewhere took it over.
    raw(path).prepare(`UPDATE eskit_leases SET fencing_token = fencing_token + 1, holder = 'thief', expires_at = CAST(unixepoch('subsec') * 1000 AS INTEGER) + 60000 WHERE name = 'job'`).run();
    await waitUntil(() => lease.signal.aborted, { message: 'the lease to be lost' });
    assert.ok(isEskitError(lease.signal.reason, ErrorCode.LockUnavailable));
    assert.match((lease.signal.reason as Error).message, /fencing token 1.*expired or another node took it over/);
    assert.ok(entries.some((e) => e.level === 'warn' && /Lost the lease on "job"/.test(e.message)), 'it says so in the log');
    await lease.release(); // a no-op now
    const row = leaseRow(locks.database, 'job');
    assert.deepEqual([row?.token, row?.holder], [2, 'thief']);
  });

  it('a holder whose thread was blocked past its ttl gives the lease up when it wakes, and an in-process waiter takes it at once', async () => {
    const path = freshPath();
    const holder = registry({ path, holderId: 'holder', ttlMs: 200, renewIntervalMs: 50 });
    const waiter = registry({ path, holderId: 'waiter', ttlMs: 200, pollIntervalMs: 60_000 });
    const lease = await holder.acquire('job');
    const next = pending(waiter.acquire('job'));
    let lostBeforeHandover: boolean | undefined;
    lease.signal.addEventListener('abort', () => (lostBeforeHandover = next.state.lease === undefined));
    // Nothing in this process runs for 300 ms: no renewals, as in a long GC pause.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 300);
    const taken = await next.settled;
    assert.equal(lease.signal.aborted, true);
    assert.equal(lostBeforeHandover, true, 'the old holder was told before the new one got it');
    assert.match((lease.signal.reason as Error).message, /not renewed within its ttl of 200 ms/);
    assert.equal(taken.fencingToken, 2);
    const row = leaseRow(holder.database, 'job');
    assert.deepEqual([row?.token, row?.holder], [2, 'waiter']);
  });

  it('a holder gives its lease up a margin before its ttl, ahead of any node that could take it over', async () => {
    const path = freshPath();
    // Margin: a tenth of the ttl, 100 ms.
    const holder = registry({ path, holderId: 'holder', ttlMs: 1000, renewIntervalMs: 100 });
    const lease = await holder.acquire('job');
    const first = leaseRow(holder.database, 'job')?.expiresAt;
    await waitUntil(() => leaseRow(holder.database, 'job')?.expiresAt !== first, { intervalMs: 1, message: 'a renewal' });
    // Just after a renewal: blocked past ttl - margin, not past the ttl, so the renewal due meanwhile
    // would still land in time without the margin.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 950);
    await waitUntil(() => lease.signal.aborted, { message: 'the lease to be given up' });
    assert.match((lease.signal.reason as Error).message, /not renewed within its ttl of 1000 ms less a margin of 100 ms/);
    assert.deepEqual(leaseRow(holder.database, 'job'), { token: 1, holder: null, expiresAt: null }, 'and freed its row');
  });

  it('two failed renewals in a row (database locked by a long writer) lose the lease and say why', async () => {
    const path = freshPath();
    const { logger, entries } = capturingLogger();
    const locks = registry({ path, ttlMs: 1000, renewIntervalMs: 50, busyTimeoutMs: 5, logger });
    const lease = await locks.acquire('job');
    const blocker = raw(path);
    blocker.exec('BEGIN IMMEDIATE');
    try {
      await waitUntil(() => lease.signal.aborted, { message: 'the lease to be lost' });
    } finally {
      blocker.exec('ROLLBACK');
    }
    const reason = lease.signal.reason as Error;
    assert.match(reason.message, /renewing it failed twice in a row/);
    assert.ok(isEskitError(reason.cause, 'ESKIT_STORE_BUSY'), `the cause is the busy database, got ${String(reason.cause)}`);
    const warnings = entries.filter((e) => e.level === 'warn').map((e) => e.message);
    assert.equal(warnings.filter((m) => /Renewing lock "job" failed; trying again/.test(m)).length, 1);
    assert.equal(warnings.filter((m) => /Lost the lease on "job"/.test(m)).length, 1);
  });
});

describe('SqliteLockRegistry: close', () => {
  it('releases held leases, fails pending acquires, refuses new ones, is idempotent, and leaves a shared connection open', async () => {
    const path = freshPath();
    const store = new SqliteEventStore({ path });
    closers.push(() => store.close());
    const a = new SqliteLockRegistry({ store, logger: silentLogger, pollIntervalMs: 60_000 });
    closers.push(() => a.close());
    const held = await a.acquire('x');
    const waiting = pending(a.acquire('x'));
    await a.close();
    assert.equal(held.signal.aborted, true);
    await assert.rejects(waiting.settled, isCode(ErrorCode.LockUnavailable));
    await assert.rejects(a.acquire('y'), isCode(ErrorCode.LockUnavailable));
    await a.close();
    assert.deepEqual(leaseRow(store.database, 'x'), { token: 1, holder: null, expiresAt: null });
    assert.equal(store.database.open, true, 'the store\'s connection is the store\'s');

    const owned = new SqliteLockRegistry({ path, logger: silentLogger });
    assert.equal((await owned.acquire('x')).fencingToken, 2, 'a later registry continues the token');
    await owned.close();
    assert.equal(owned.database.open, false, 'a connection the registry opened is closed with it');
  });
});
