/**
 * PostgresLockRegistry when a statement on its lock connection fails while the connection lives on. Errors
 * that waiting heals (a read-only server during a failover, exhausted resources, a cancelled statement)
 * must leave standbys waiting; errors it does not heal fail them.
 *
 * Faults are injected on the server for the registry under test only (`installFaults`, `faulty`).
 * The release's failures are in lock-registry-release.test.ts.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { ErrorCode, isEskitError, MigrationError } from '../../src/core/errors.js';
import { lockKey } from '../../src/postgres/index.js';
import { isTransient } from '../../src/postgres/postgres-lock-registry.js';
import { waitUntil } from '../../src/testing/wait.js';
import { capturingLogger, cleanUp, faulty, heldKeys, installFaults, pidOf, registry, said, session, standBy, testSchema } from './lock-helpers.js';

afterEach(cleanUp);

describe('PostgresLockRegistry: errors of a statement on a live lock connection', () => {
  it(
    'a standby whose take fails with an error that waiting heals (25006 read-only, 53300, 57014, 40001) says so, goes on waiting over a new session, and takes the lock once it can',
    { timeout: 60_000 },
    async () => {
      const schema = await testSchema();
      const a = registry(schema);
      const lease = await a.acquire('x');
      const faults = await installFaults(schema);
      const logger = capturingLogger();
      const b = faulty(schema, { logger, pollIntervalMs: 20 });
      const standby = await standBy(b, 'x');
      for (const sqlstate of ['25006', '53300', '57014', '40001']) {
        const before = await pidOf(b);
        const told = (): number => said(logger.lines, 'warn', new RegExp(`SQLSTATE ${sqlstate}`)).length;
        await faults.set('take', { sqlstate });
        // Retries back off over consecutive failures (four kinds in a row here): under a loaded CI the
        // last kind's two takes have measured past 5 s.
        await waitUntil(() => told() >= 2 || standby.state.error !== undefined, { timeoutMs: 15_000, message: `two takes failed with ${sqlstate}` });
        assert.equal(standby.state.error, undefined, `a take failing with ${sqlstate} failed the waiting acquire`);
        // It held nothing: the session was ended, and a new one may land on a healthy server.
        // The reconnect backs off over the same consecutive failures: the same bound.
        await waitUntil(() => b.connectionPid !== undefined && b.connectionPid !== before, { timeoutMs: 15_000, message: `a new session after ${sqlstate}` });
        await faults.clear('take');
      }
      assert.equal(standby.state.lease, undefined, 'A still holds the lock');
      await lease.release();
      const taken = await standby.settled;
      assert.ok(taken.fencingToken > lease.fencingToken);
      assert.deepEqual(await heldKeys(schema, await pidOf(b)), [lockKey('x', schema.name)]);
    },
  );

  it('a registry that holds a lease keeps it, and its session, when a take for another lock fails with an error that waiting heals', { timeout: 15_000 }, async () => {
    const schema = await testSchema();
    const a = registry(schema);
    const lease = await a.acquire('x');
    const faults = await installFaults(schema);
    const logger = capturingLogger();
    const b = faulty(schema, { logger, pollIntervalMs: 20 });
    const held = await b.acquire('held');
    const standby = await standBy(b, 'x');
    const pid = await pidOf(b);
    await faults.set('take', { sqlstate: '53300' });
    await waitUntil(() => said(logger.lines, 'warn', /SQLSTATE 53300.*same session/).length >= 2 || standby.state.error !== undefined, {
      message: 'two takes failed with 53300',
    });
    assert.equal(standby.state.error, undefined);
    assert.equal(held.signal.aborted, false, 'ending the session would have given "held" away');
    assert.equal(b.connectionPid, pid);
    await faults.clear('take');
    await lease.release();
    assert.ok((await standby.settled).fencingToken > lease.fencingToken);
    assert.deepEqual(await heldKeys(schema, pid), [lockKey('held', schema.name), lockKey('x', schema.name)].sort());
  });

  it('a take whose undo fails too ends the session, which may hold a lock that no lease knows of, and the leases held through it', { timeout: 15_000 }, async () => {
    const schema = await testSchema();
    const a = registry(schema);
    const lease = await a.acquire('x');
    const faults = await installFaults(schema);
    const b = faulty(schema, { pollIntervalMs: 20 });
    const held = await b.acquire('held');
    const standby = await standBy(b, 'x');
    const pid = await pidOf(b);
    await faults.set('unlock', { sqlstate: '57014' });
    await faults.set('take', { sqlstate: '57014' });
    await waitUntil(() => held.signal.aborted || standby.state.error !== undefined, { message: 'the session to end' });
    assert.equal(standby.state.error, undefined);
    assert.match((held.signal.reason as Error).message, /Lost the lease on "held".*may leave locks held, so this node ended the session/s);
    await faults.clear('take');
    await faults.clear('unlock');
    await lease.release();
    assert.ok((await standby.settled).fencingToken > lease.fencingToken);
    assert.notEqual(await pidOf(b), pid);
  });

  it('a standby whose take is cancelled on the server (57014, as by pg_cancel_backend or a statement_timeout) goes on waiting and takes the lock', { timeout: 15_000 }, async () => {
    const schema = await testSchema();
    const a = registry(schema);
    const b = registry(schema, { pollIntervalMs: 20 });
    const lease = await a.acquire('x');
    const standby = await standBy(b, 'x');
    // The release wakes B, whose take gets the lock and then waits for its token: nextval waits while
    // an uncommitted ALTER SEQUENCE holds the token sequence.
    const blocker = await session(schema);
    await blocker.query('BEGIN');
    await blocker.query(`ALTER SEQUENCE "${schema.name}".lease_tokens INCREMENT BY 1`);
    await lease.release();
    const pid = await pidOf(b);
    await waitUntil(
      async () => (await schema.pool.query<{ w: string | null }>('SELECT wait_event_type AS w FROM pg_stat_activity WHERE pid = $1', [pid])).rows[0]?.w === 'Lock',
      { message: 'the take to wait for its token' },
    );
    await schema.pool.query('SELECT pg_cancel_backend($1)', [pid]);
    await waitUntil(() => standby.state.error ?? (b.connectionPid !== undefined && b.connectionPid !== pid), { message: 'B to go on over a new session' });
    assert.equal(standby.state.error, undefined, 'the cancelled take failed the waiting acquire');
    await blocker.query('COMMIT');
    const taken = await standby.settled;
    assert.ok(taken.fencingToken > lease.fencingToken);
    assert.deepEqual(await heldKeys(schema, await pidOf(b)), [lockKey('x', schema.name)]);
  });

  it('a take failing with an error that waiting does not heal (42501 insufficient privilege) still fails the waiting acquire', { timeout: 15_000 }, async () => {
    const schema = await testSchema();
    const a = registry(schema);
    const lease = await a.acquire('x');
    const faults = await installFaults(schema);
    const b = faulty(schema, { pollIntervalMs: 20 });
    const standby = await standBy(b, 'x');
    await faults.set('take', { sqlstate: '42501' });
    await assert.rejects(standby.settled, (error: unknown) => {
      assert.ok(isEskitError(error, ErrorCode.LockUnavailable), `rejected with ESKIT_LOCK_UNAVAILABLE, got ${String(error)}`);
      assert.equal(((error as Error).cause as { code?: string } | undefined)?.code, '42501');
      return true;
    });
    await faults.clear('take');
    assert.equal(lease.signal.aborted, false);
  });

  it('tells errors that waiting heals from those it does not, by SQLSTATE class', () => {
    const error = (code: string): Error => Object.assign(new Error('server error'), { code });
    for (const code of ['08006', '25006', '40001', '40P01', '53100', '53200', '53300', '55P03', '57014', '57P01', '57P03', '58030']) {
      assert.equal(isTransient(error(code)), true, `${code} is transient`);
    }
    for (const code of ['28000', '28P01', '3D000', '3F000', '42501', '42P01', '42704', '2200H', '25001', '0A000', 'XX000', 'XX001', '58P01']) {
      assert.equal(isTransient(error(code)), false, `${code} is not transient`);
    }
    assert.equal(isTransient(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })), true, 'a socket error is transient');
    assert.equal(isTransient(new MigrationError('failed')), false, 'a failed migration is not');
  });
});
