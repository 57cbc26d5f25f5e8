/**
 * PostgresLockRegistry when a release fails on a live lock connection (not a lost one): the statement may have
 * failed before its unlock ran, and the heartbeats would then keep the lock held by the session for good.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { lockKey } from '../../src/postgres/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { backends, capturingLogger, cleanUp, faulty, installFaults, pidOf, registry, said, session, standBy, testSchema } from './lock-helpers.js';

afterEach(cleanUp);

describe('PostgresLockRegistry: a release that fails', () => {
  it(
    'a release that fails on a live session (its statement_timeout fired before the unlock ran) ends that session: the lock is freed, the standby takes over, and the other leases of that session end',
    { timeout: 15_000 },
    async () => {
      const schema = await testSchema();
      await (await registry(schema).acquire('migrated')).release();
      const faults = await installFaults(schema);
      const logger = capturingLogger();
      const h = faulty(schema, { logger }, ['statement_timeout=500']);
      const s = registry(schema, { pollIntervalMs: 50 });
      const lease = await h.acquire('x');
      const other = await h.acquire('y');
      const standby = await standBy(s, 'x');
      const pid = await pidOf(h);
      // The release waits behind an advisory lock the test holds, until its statement_timeout cancels it.
      const gate = lockKey('gate', schema.name);
      await (await session(schema)).query('SELECT pg_advisory_lock($1::bigint)', [gate]);
      await faults.set('unlock', { gate });
      const released = lease.release().then(
        () => 'resolved',
        (error: unknown) => error,
      );
      const taken = await waitUntil(() => standby.state.lease, { timeoutMs: 5_000, message: 'the standby to take over the lock whose release failed' });
      assert.ok(taken.fencingToken > other.fencingToken);
      assert.equal(await released, 'resolved', 'the lock is free: release() says so');
      assert.equal(other.signal.aborted, true, 'the other lease of the ended session is gone');
      assert.match((other.signal.reason as Error).message, /Lost the lease on "y".*57014/s);
      assert.equal(said(logger.lines, 'error', /Releasing lock "x" failed/).length, 1, 'the failed release is logged as an error');
      await waitUntil(async () => !(await backends(schema, h.applicationName)).includes(pid), { message: `the session ${pid} to end` });
      await faults.clear('unlock');
      // The registry goes on: a new session, new leases.
      const again = await h.acquire('z');
      assert.notEqual(await pidOf(h), pid);
      assert.ok(again.fencingToken > taken.fencingToken);
    },
  );

  it('an acquire aborted while its take is in flight, whose give-back then fails, ends the session: the lock is free for another node', { timeout: 15_000 }, async () => {
    const schema = await testSchema();
    await (await registry(schema).acquire('migrated')).release();
    const faults = await installFaults(schema);
    const h = faulty(schema);
    const keep = await h.acquire('keep');
    const pid = await pidOf(h);
    // nextval() waits behind an open ALTER SEQUENCE: the take has locked "x" and waits for its token.
    const blocker = await session(schema);
    await blocker.query('BEGIN');
    await blocker.query(`ALTER SEQUENCE "${schema.name}".lease_tokens INCREMENT BY 1`);
    const controller = new AbortController();
    const acquire = h.acquire('x', { signal: controller.signal });
    await waitUntil(
      async () => (await schema.pool.query<{ w: string | null }>('SELECT wait_event_type AS w FROM pg_stat_activity WHERE pid = $1', [pid])).rows[0]?.w === 'Lock',
      { message: 'the take to wait for its token' },
    );
    await faults.set('unlock', { sqlstate: '57014' });
    controller.abort();
    await assert.rejects(acquire, (e: unknown) => (e as Error).name === 'AbortError');
    await blocker.query('COMMIT');
    const other = registry(schema);
    const taken = await other.acquire('x', { signal: AbortSignal.timeout(3_000) });
    assert.ok(taken.fencingToken > keep.fencingToken);
    assert.equal(keep.signal.aborted, true, 'the lease of the ended session is gone');
  });
});
