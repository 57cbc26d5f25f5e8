/**
 * SqliteLockRegistry across steps of the wall clock (an NTP step, a VM resumed, an operator's `date`).
 * The database judges expiry by SQLite's clock, the wall clock; the holder counts its ttl on its
 * monotonic clock. A forward step made the database call a live holder's lease expired, and a waiting
 * node took it at its next poll while the holder went on until its next renewal: two holders.
 *
 * How the clock is stepped without touching the machine's: SQLite lets an application function
 * override a built-in one of the same name on a connection, so each registry's connection gets a
 * `unixepoch` of the test's that returns the real time plus an offset the test moves. The registry's
 * statements are the production ones, unchanged; only the clock under them moves, on every connection
 * of the test at once, as a host's clock does.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type Database from 'better-sqlite3';
import type { Lease } from '../../src/core/lock.js';
import { silentLogger } from '../../src/core/logger.js';
import { SqliteLockRegistry } from '../../src/sqlite/sqlite-lock-registry.js';
import type { SqliteLockRegistryOptions } from '../../src/sqlite/sqlite-lock-registry.js';
import { waitUntil } from '../../src/testing/wait.js';
import { databasesAfterEach } from './helpers.js';

const { freshPath, closeAfterTest } = databasesAfterEach('locks-clock');

/** One host's wall clock as SQLite sees it, stepped by the test. */
class SteppedClock {
  offsetMs = 0;

  /** Call before the registry's first acquire: its statements are prepared then. */
  install(database: Database.Database): void {
    database.function('unixepoch', { varargs: true, deterministic: false }, (...args: unknown[]) => {
      // The registry asks for nothing else; anything else must fail loudly, not answer wrongly.
      if (args.length !== 1 || args[0] !== 'subsec') throw new Error(`the stepped clock only answers unixepoch('subsec'), got unixepoch(${args.map(String).join(', ')})`);
      return (Date.now() + this.offsetMs) / 1000;
    });
  }

  step(ms: number): void {
    this.offsetMs += ms;
  }
}

function registry(clock: SteppedClock, options: SqliteLockRegistryOptions): SqliteLockRegistry {
  const created = new SqliteLockRegistry({ logger: silentLogger, ...options });
  clock.install(created.database);
  closeAfterTest(() => created.close());
  return created;
}

interface LeaseRow {
  token: number;
  holder: string | null;
  expiresAt: number | null;
}

function leaseRow(db: Database.Database, name: string): LeaseRow | undefined {
  return db.prepare('SELECT fencing_token AS token, holder, expires_at AS expiresAt FROM eskit_leases WHERE name = ?').get(name) as LeaseRow | undefined;
}

/** The time on the connection's (stepped) clock, in ms, as the registry's statements compute it. */
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
  settled.catch(() => undefined);
  return { state, settled };
}

/** A lease row of a node in another process that is no longer there: nobody renews it. */
function plantLease(db: Database.Database, name: string, token: number, expiresInMs: number): number {
  db.prepare(`INSERT INTO eskit_leases (name, fencing_token, holder, expires_at) VALUES (?, ?, 'gone', CAST(unixepoch('subsec') * 1000 AS INTEGER) + ?)`).run(name, token, expiresInMs);
  return leaseRow(db, name)?.expiresAt as number;
}

const HOUR = 3_600_000;

describe('SqliteLockRegistry: the wall clock steps forward', () => {
  it('past a live holder\'s expiry: the holder gives its lease up before its monotonic deadline, and before another node can take it', { timeout: 15_000 }, async () => {
    const clock = new SteppedClock();
    const path = freshPath();
    const ttlMs = 3_000;
    const holder = registry(clock, { path, holderId: 'holder', ttlMs, renewIntervalMs: 50, pollIntervalMs: 60_000 });
    const taker = registry(clock, { path, holderId: 'taker', ttlMs, pollIntervalMs: 5 });
    const lease = await holder.acquire('job');
    let rowWhenLost: LeaseRow | undefined;
    let lostAt: number | undefined;
    // Runs synchronously inside the abort: the row as it is at the moment the holder gives up.
    lease.signal.addEventListener('abort', () => {
      rowWhenLost = leaseRow(holder.database, 'job');
      lostAt = performance.now();
    });
    let waiting = false;
    const next = pending(taker.acquire('job', { onWaiting: () => (waiting = true) }));
    assert.equal(waiting, true, 'the taker stands by');
    // The holder is alive: it renews.
    const seen = new Set<number>();
    await waitUntil(() => seen.add(leaseRow(taker.database, 'job')?.expiresAt as number).size >= 3, { message: 'two renewals' });

    const steppedAt = performance.now();
    clock.step(HOUR);
    assert.ok(dbNow(taker.database) > (leaseRow(taker.database, 'job')?.expiresAt as number), 'by the database clock the lease has expired');
    const taken = await next.settled;

    assert.equal(lease.signal.aborted, true, 'the holder gave its lease up');
    assert.deepEqual(rowWhenLost && [rowWhenLost.token, rowWhenLost.holder], [1, 'holder'], 'when it gave up, the row was still its own: no other node had taken it');
    assert.ok((lostAt as number) - steppedAt < ttlMs, `it gave up ${((lostAt as number) - steppedAt).toFixed(0)} ms after the step, before its monotonic deadline (ttl ${ttlMs} ms)`);
    assert.match((lease.signal.reason as Error).message, /expired or another node took it over/);
    assert.equal(taken.fencingToken, 2);
    assert.ok((next.state.at as number) >= (lostAt as number));
    const row = leaseRow(taker.database, 'job');
    assert.deepEqual([row?.token, row?.holder], [2, 'taker']);
  });

  it('past a dead holder\'s expiry: another node takes the lease only after watching it unrenewed for a ttl on its own monotonic clock', { timeout: 15_000 }, async () => {
    const clock = new SteppedClock();
    const path = freshPath();
    const ttlMs = 400;
    const taker = registry(clock, { path, holderId: 'taker', ttlMs, pollIntervalMs: 5 });
    plantLease(taker.database, 'job', 7, 300);
    const firstSeenAt = performance.now();
    const next = pending(taker.acquire('job'));
    clock.step(HOUR);
    const taken = await next.settled;
    const waited = (next.state.at as number) - firstSeenAt;
    // The holder (elsewhere, not stepped by the test's clock) may have been alive: its own monotonic
    // deadline is at most a ttl after its last renewal, which came before the taker first saw the row.
    assert.ok(waited >= ttlMs, `taken ${waited.toFixed(0)} ms after the taker first saw the row, not before a ttl (${ttlMs} ms)`);
    assert.equal(taken.fencingToken, 8);
  });

  it('a node that first sees a lease already expired waits a ttl before taking it; a released lease it takes at once', { timeout: 15_000 }, async () => {
    const clock = new SteppedClock();
    const path = freshPath();
    const ttlMs = 300;
    const taker = registry(clock, { path, holderId: 'taker', ttlMs, pollIntervalMs: 5 });
    plantLease(taker.database, 'job', 3, -10_000);
    const startedAt = performance.now();
    const lease = await taker.acquire('job');
    const waited = performance.now() - startedAt;
    assert.ok(waited >= ttlMs, `waited ${waited.toFixed(0)} ms for a lease that expired 10 s ago by the database clock: it cannot tell a dead holder from a live one behind a clock step`);
    assert.equal(lease.fencingToken, 4);
    await lease.release();
    const again = performance.now();
    const next = await taker.acquire('job');
    assert.ok(performance.now() - again < ttlMs, 'a released lease has no holder to wait for');
    assert.equal(next.fencingToken, 5);
  });

  it('a try-lock repeated by a registry takes a dead holder\'s lease once it has watched it for a ttl', { timeout: 15_000 }, async () => {
    const clock = new SteppedClock();
    const path = freshPath();
    const ttlMs = 200;
    const taker = registry(clock, { path, holderId: 'taker', ttlMs, pollIntervalMs: 60_000 });
    plantLease(taker.database, 'job', 1, -1);
    const tryLock = async (): Promise<Lease | undefined> => {
      const controller = new AbortController();
      try {
        return await taker.acquire('job', { signal: controller.signal, onWaiting: () => controller.abort() });
      } catch (error) {
        if (controller.signal.aborted) return undefined;
        throw error;
      }
    };
    // Each try is a new acquire: the watch must outlive it, or a try-lock would never take a dead lease.
    const lease = await waitUntil(tryLock, { timeoutMs: 5_000, intervalMs: 20, message: 'a try to take the dead lease' });
    assert.equal(lease.fencingToken, 2);
  });
});

describe('SqliteLockRegistry: the wall clock steps backward', () => {
  it('a live holder keeps its lease: its renewals pull the expiry back in line with the stepped clock, and no one else takes it', { timeout: 15_000 }, async () => {
    const clock = new SteppedClock();
    const path = freshPath();
    const ttlMs = 600;
    const holder = registry(clock, { path, holderId: 'holder', ttlMs, renewIntervalMs: 50, pollIntervalMs: 60_000 });
    const taker = registry(clock, { path, holderId: 'taker', ttlMs, pollIntervalMs: 5 });
    const lease = await holder.acquire('job');
    const next = pending(taker.acquire('job'));
    clock.step(-HOUR);
    const steppedAt = performance.now();
    await waitUntil(() => (leaseRow(holder.database, 'job')?.expiresAt as number) <= dbNow(holder.database) + ttlMs, {
      message: 'a renewal after the step',
    });
    // What is tested is a span of time: renewals over two ttls, during which the taker polls every 5 ms.
    const renewals = new Set<number>();
    await waitUntil(() => renewals.add(leaseRow(holder.database, 'job')?.expiresAt as number).size >= 8 && performance.now() - steppedAt > 2 * ttlMs, {
      message: 'eight renewals over two ttls',
    });
    assert.equal(lease.signal.aborted, false);
    assert.equal(next.state.lease, undefined);
    const row = leaseRow(holder.database, 'job');
    assert.deepEqual([row?.token, row?.holder], [1, 'holder']);
    await lease.release();
    assert.equal((await next.settled).fencingToken, 2, 'a release hands over at once, as without the step');
  });

  it('a holder that died before renewing is replaced only once the stepped clock passes its last expiry: later by the size of the step', { timeout: 15_000 }, async () => {
    const clock = new SteppedClock();
    const path = freshPath();
    const ttlMs = 200;
    const stepMs = 600;
    const taker = registry(clock, { path, holderId: 'taker', ttlMs, pollIntervalMs: 5 });
    const plantedAt = performance.now();
    const expiry = plantLease(taker.database, 'job', 1, 200);
    const next = pending(taker.acquire('job'));
    clock.step(-stepMs);
    const taken = await next.settled;
    const grantedAt = dbNow(taker.database);
    const waited = (next.state.at as number) - plantedAt;
    assert.ok(grantedAt > expiry, `taken at ${grantedAt}, after the expiry ${expiry} by the stepped clock`);
    assert.ok(waited >= 200 + stepMs - 5, `taken ${waited.toFixed(0)} ms after the lease was written: its 200 ms plus the ${stepMs} ms step`);
    assert.equal(taken.fencingToken, 2);
  });
});
