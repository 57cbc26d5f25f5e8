/**
 * Red-team tests of SqliteLockRegistry: state changed from inside a callback the registry runs
 * (onWaiting, a lease's abort listeners), then read as if unchanged. Three found bugs, fixed since:
 * - close() marked the registry closed only after releasing its leases, whose abort listeners run
 *   synchronously: one that acquired again was granted a lease that close() had passed over, renewed
 *   for good on a shared connection (a lock leaked by a closed registry).
 * - onWaiting ran before the waiter listened for wake-ups and for close(): a release or a close() from
 *   inside it was heard only at the next poll.
 * The regression tests of the second (and of onWaiting that throws) run for every registry in the
 * LockRegistry conformance suite (lock-registry-conformance.test.ts, whose SQLite registries poll once a
 * minute); what stays here is SQLite's own: a lease leaked on a connection shared with a store.
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

});
