/**
 * Red-team tests of SqliteLockRegistry: state changed from inside a callback the registry runs
 * (onWaiting, a lease's abort listeners), then read as if unchanged. Three found bugs, fixed since:
 * - close() marked the registry closed only after releasing its leases, whose abort listeners run
 *   synchronously: one that acquired again was granted a lease that close() had passed over, renewed
 *   for good on a shared connection (a lock leaked by a closed registry).
 * - onWaiting ran before the waiter listened for wake-ups and for close(): a release or a close() from
 *   inside it was heard only at the next poll.
 * Both registries in a test poll once a minute, so the per-test timeout is what fails a test whose
 * acquire would only have settled at a poll.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import type { Lease } from '../../src/core/lock.js';
import { silentLogger } from '../../src/core/logger.js';
import { SqliteEventStore, SqliteLockRegistry } from '../../src/sqlite/index.js';
import type { SqliteLockRegistryOptions } from '../../src/sqlite/index.js';
import { databasesAfterEach } from './helpers.js';

const { freshPath, closeAfterTest } = databasesAfterEach('locks-abort');

function registry(options: SqliteLockRegistryOptions): SqliteLockRegistry {
  const created = new SqliteLockRegistry({ logger: silentLogger, pollIntervalMs: 60_000, ...options });
  closeAfterTest(() => created.close());
  return created;
}

function leaseRow(registry: SqliteLockRegistry, name: string): unknown {
  return registry.database.prepare('SELECT fencing_token AS token, holder, expires_at AS expiresAt FROM eskit_leases WHERE name = ?').get(name);
}

const lockUnavailable = (error: unknown): boolean => isEskitError(error, ErrorCode.LockUnavailable);

describe('SqliteLockRegistry red team: callbacks that change the state', () => {
  it('a lease\'s abort listener that acquires again while close() releases the lease is refused, and no lease outlives close()', async () => {
    const path = freshPath();
    // A shared connection stays open after close(): a lease leaked past it would be renewed for good.
    const store = new SqliteEventStore({ path });
    closeAfterTest(() => store.close());
    const locks = registry({ store });
    const lease = await locks.acquire('x');
    let again: Promise<Lease> | undefined;
    lease.signal.addEventListener('abort', () => {
      again = locks.acquire('x');
      again.catch(() => undefined);
    });
    await locks.close();
    assert.ok(again, 'the listener ran');
    await assert.rejects(again, lockUnavailable);
    assert.deepEqual(leaseRow(locks, 'x'), { token: 1, holder: null, expiresAt: null }, 'the row is free, not taken after close()');
  });

  it('a holder released from onWaiting hands the lock to that waiter at once, not at its next poll', { timeout: 5_000 }, async () => {
    const path = freshPath();
    const a = registry({ path, holderId: 'a' });
    const b = registry({ path, holderId: 'b' });
    const held = await a.acquire('x');
    const lease = await b.acquire('x', { onWaiting: () => void held.release() });
    assert.equal(lease.fencingToken, 2);
    const row = leaseRow(b, 'x') as { token: number; holder: string };
    assert.deepEqual([row.token, row.holder], [2, 'b']);
  });

  it('close() from onWaiting fails that acquire with ESKIT_LOCK_UNAVAILABLE at once, not at its next poll', { timeout: 5_000 }, async () => {
    const path = freshPath();
    const a = registry({ path });
    const b = registry({ path });
    await a.acquire('x');
    await assert.rejects(b.acquire('x', { onWaiting: () => void b.close() }), lockUnavailable);
  });

  it('an onWaiting that throws fails its acquire and leaves no waiter behind to take the lock later', async () => {
    const path = freshPath();
    const a = registry({ path });
    const b = registry({ path });
    const held = await a.acquire('x');
    const boom = new Error('onWaiting failed');
    await assert.rejects(
      b.acquire('x', {
        onWaiting: () => {
          throw boom;
        },
      }),
      (error) => error === boom,
    );
    // A release wakes in-process waiters synchronously: a waiter left listening would take the row now.
    await held.release();
    assert.deepEqual(leaseRow(a, 'x'), { token: 1, holder: null, expiresAt: null });
  });
});
