/**
 * Red-team tests of PostgresLockRegistry: the waiter keys (NOTIFY only when a standby waits), the token
 * sequence, the lazy lease signal and the single linger timer. Each test attacks one way these could
 * fail. Three of them found bugs (a lock leaked by an aborted acquire, a lost wake-up, a leaked waiter
 * key), fixed since; they stay as regression tests.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterEach, describe, it } from 'node:test';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import { lockKey } from '../../src/postgres/index.js';
import type { PostgresLockRegistry } from '../../src/postgres/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { afterTest, backends, cleanUp, countReleaseNotifications, heldKeys, pending, pidOf, registry, session, standBy, testSchema } from './lock-helpers.js';
import { POSTGRES_URL } from '../support/postgres.js';
import type { TestSchema } from '../support/postgres.js';

afterEach(cleanUp);

const key = (schema: TestSchema, name: string): string => lockKey(name, schema.name);
const waitKey = (schema: TestSchema, name: string): string => lockKey(`waiting\u0000${name}`, schema.name);

/** Waits until `pid` holds exactly `keys` shared (waiter keys come and go fire-and-forget). */
async function sharedKeysBecome(schema: TestSchema, pid: number, keys: string[], message: string): Promise<void> {
  const wanted = [...keys].sort();
  await waitUntil(async () => JSON.stringify(await heldKeys(schema, pid, 'ShareLock')) === JSON.stringify(wanted), { timeoutMs: 3_000, message });
}

/** Every statement queued on `locks`' connection before this has run: an acquire + release goes after them. */
async function barrier(locks: PostgresLockRegistry): Promise<void> {
  await (await locks.acquire(`barrier-${randomBytes(3).toString('hex')}`)).release();
}

const code = (wanted: string) => (error: unknown) => isEskitError(error, wanted);
/** Well under the 60 s poll: a standby that gets the lock this fast was woken by the release. */
const WAKE_MS = 4_000;

describe('PostgresLockRegistry red team: wake-ups', () => {
  it('release racing a local second acquire and a remote standby: each later holder is woken by NOTIFY (both poll every 60 s)', { timeout: 20_000 }, async () => {
    const schema = await testSchema();
    const a = registry(schema, { pollIntervalMs: 60_000 });
    const b = registry(schema, { pollIntervalMs: 60_000 });
    const first = await a.acquire('x');
    const local = await standBy(a, 'x');
    const remote = await standBy(b, 'x');
    await sharedKeysBecome(schema, await pidOf(b), [waitKey(schema, 'x')], 'B to hold the waiter key');
    await first.release();
    const second = await waitUntil(() => local.state.lease ?? remote.state.lease, { timeoutMs: WAKE_MS, message: 'a second holder' });
    const other = second === local.state.lease ? remote : local;
    assert.equal(other.state.lease, undefined, 'one holder at a time');
    await second.release();
    const third = await waitUntil(() => other.state.lease, { timeoutMs: WAKE_MS, message: 'the last standby, woken by NOTIFY' });
    assert.ok(first.fencingToken < second.fencingToken && second.fencingToken < third.fencingToken, 'tokens grow');
    await third.release();
    for (const locks of [a, b]) {
      const pid = await pidOf(locks);
      assert.deepEqual(await heldKeys(schema, pid), [], 'no lock left behind (counted once each)');
      await sharedKeysBecome(schema, pid, [], 'no waiter key left behind');
    }
  });

  it('release, then an acquire of the same name before the release returned: granted once, token grows, one unlock frees it', async () => {
    const schema = await testSchema();
    const a = registry(schema);
    const lease = await a.acquire('x');
    const released = lease.release();
    const next = await a.acquire('x');
    await released;
    assert.equal(next.fencingToken, lease.fencingToken + 1);
    const pid = await pidOf(a);
    assert.deepEqual(await heldKeys(schema, pid), [key(schema, 'x')]);
    await next.release();
    assert.deepEqual(await heldKeys(schema, pid), [], 'taken once, not re-entrantly twice');
  });

  it(
    'a standby whose waiter-key try meets a releaser holding that key for its instant tries the lock again at once (no lost wake-up)',
    { timeout: 15_000 },
    async () => {
      const schema = await testSchema();
      const b = registry(schema, { pollIntervalMs: 60_000 });
      await barrier(b); // migrated and connected
      // The interleaving, played with two sessions of the test: B's take is denied (H holds "x");
      // a releaser unlocks "x", finds no waiter (its exclusive try on the waiter key succeeds, so no
      // NOTIFY) and holds that key for the rest of its statement; B's shared try falls into that instant.
      const holder = await session(schema);
      const releaser = await session(schema);
      await holder.query('SELECT pg_advisory_lock($1::bigint)', [key(schema, 'x')]);
      await releaser.query('BEGIN');
      await releaser.query('SELECT pg_advisory_xact_lock($1::bigint)', [waitKey(schema, 'x')]);
      const standby = await standBy(b, 'x');
      const pid = await pidOf(b);
      await waitUntil(
        async () => {
          const result = await schema.pool.query<{ query: string }>('SELECT query FROM pg_stat_activity WHERE pid = $1', [pid]);
          return result.rows[0]?.query.includes('pg_try_advisory_lock_shared');
        },
        { intervalMs: 1, message: 'B to try the waiter key' },
      );
      await holder.query('SELECT pg_advisory_unlock($1::bigint)', [key(schema, 'x')]);
      await releaser.query('COMMIT');
      // Nobody holds "x" now and no NOTIFY is coming: only an immediate retry (or the poll) can take it.
      await waitUntil(() => standby.state.lease, { timeoutMs: WAKE_MS, message: 'B to take the free lock without waiting for its 60 s poll' });
    },
  );

  it('a standby whose lock connection is killed takes its waiter key again on the new session, and is still woken by NOTIFY', { timeout: 15_000 }, async () => {
    const schema = await testSchema();
    const a = registry(schema);
    const b = registry(schema, { pollIntervalMs: 60_000 });
    const lease = await a.acquire('x');
    const standby = await standBy(b, 'x');
    const before = await pidOf(b);
    await sharedKeysBecome(schema, before, [waitKey(schema, 'x')], 'B to hold the waiter key');
    await schema.pool.query('SELECT pg_terminate_backend($1)', [before]);
    const after = await waitUntil(() => (b.connectionPid !== undefined && b.connectionPid !== before ? b.connectionPid : undefined), {
      message: 'B to reconnect',
    });
    await sharedKeysBecome(schema, after, [waitKey(schema, 'x')], 'the new session to hold the waiter key');
    assert.equal(standby.state.lease, undefined);
    await lease.release();
    const next = await waitUntil(() => standby.state.lease, { timeoutMs: WAKE_MS, message: 'B woken by NOTIFY after its reconnect' });
    assert.equal(next.fencingToken, lease.fencingToken + 1);
    await sharedKeysBecome(schema, after, [], 'the waiter key given up once granted');
  });
});

describe('PostgresLockRegistry red team: waiter keys and aborted acquires', () => {
  it('waiting, giving up and waiting again never counts the waiter key twice', { timeout: 15_000 }, async () => {
    const schema = await testSchema();
    const a = registry(schema);
    const b = registry(schema, { pollIntervalMs: 60_000 });
    const lease = await a.acquire('x');
    for (let round = 0; round < 3; round++) {
      const controller = new AbortController();
      const standby = await standBy(b, 'x', { signal: controller.signal });
      await sharedKeysBecome(schema, await pidOf(b), [waitKey(schema, 'x')], `round ${round}: B holds the waiter key`);
      controller.abort();
      await assert.rejects(standby.settled, (e: unknown) => (e as Error).name === 'AbortError');
    }
    await barrier(b);
    await sharedKeysBecome(schema, await pidOf(b), [], 'one unlock per take: no waiter key left');
    const notifications = await countReleaseNotifications(schema);
    await lease.release();
    await barrier(a);
    await barrier(b);
    assert.equal(notifications(), 0, 'nobody waits: the release sent no NOTIFY');
  });

  it(
    'a try-acquire (onWaiting aborts the acquire) leaves no waiter key behind',
    { timeout: 15_000 },
    async () => {
      const schema = await testSchema();
      const a = registry(schema);
      const b = registry(schema);
      const lease = await a.acquire('x');
      const controller = new AbortController();
      await assert.rejects(
        b.acquire('x', { signal: controller.signal, onWaiting: () => controller.abort() }),
        (e: unknown) => (e as Error).name === 'AbortError',
      );
      await barrier(b);
      const notifications = await countReleaseNotifications(schema);
      assert.deepEqual(await heldKeys(schema, await pidOf(b), 'ShareLock'), [], 'B waits for nothing, so holds no waiter key');
      await lease.release();
      await barrier(a);
      assert.equal(notifications(), 0, 'the release sent no NOTIFY: nobody waits');
    },
  );

  it('an onWaiting that throws rejects its acquire with that error and leaves no waiter key behind', { timeout: 15_000 }, async () => {
    const schema = await testSchema();
    const a = registry(schema);
    const b = registry(schema);
    const lease = await a.acquire('x');
    const thrown = new Error('onWaiting broke');
    await assert.rejects(
      b.acquire('x', {
        onWaiting: () => {
          throw thrown;
        },
      }),
      (e: unknown) => e === thrown,
    );
    await barrier(b);
    assert.deepEqual(await heldKeys(schema, await pidOf(b), 'ShareLock'), [], 'B waits for nothing');
    await lease.release();
    await barrier(a);
    assert.deepEqual(await heldKeys(schema, await pidOf(b)), [], 'nor does it take x once free');
  });

  it(
    'an acquire aborted while its take is in flight gives the granted lock straight back',
    { timeout: 15_000 },
    async () => {
      const schema = await testSchema();
      const a = registry(schema);
      const keep = await a.acquire('keep'); // a busy registry: the linger timer does not end the session
      const pid = await pidOf(a);
      // nextval() waits behind an open ALTER SEQUENCE: the take has locked "x" and waits for its token.
      const blocker = await session(schema);
      await blocker.query('BEGIN');
      await blocker.query(`ALTER SEQUENCE "${schema.name}".lease_tokens INCREMENT BY 1`);
      const controller = new AbortController();
      const acquire = pending(a.acquire('x', { signal: controller.signal }));
      await waitUntil(
        async () => (await schema.pool.query<{ w: string | null }>('SELECT wait_event_type AS w FROM pg_stat_activity WHERE pid = $1', [pid])).rows[0]?.w === 'Lock',
        { message: 'the take to wait for its token' },
      );
      controller.abort();
      await assert.rejects(acquire.settled, (e: unknown) => (e as Error).name === 'AbortError');
      await blocker.query('COMMIT');
      await barrier(a);
      assert.deepEqual(await heldKeys(schema, pid), [key(schema, 'keep')], 'only "keep" is held; "x" was given back');
      const b = registry(schema);
      const taken = await b.acquire('x', { signal: AbortSignal.timeout(2_000) });
      assert.ok(taken.fencingToken > keep.fencingToken);
    },
  );

  it('an acquire aborted while the lock connection opens: rejected, nothing thrown into the process, and the registry still grants', { timeout: 15_000 }, async () => {
    const schema = await testSchema();
    const locks = registry(schema);
    // It crashed the process: the pass that opened the connection looked up the aborted request.
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => {
      unhandled.push(reason);
    };
    process.on('unhandledRejection', onUnhandled);
    afterTest(() => process.off('unhandledRejection', onUnhandled));
    const controller = new AbortController();
    const aborted = locks.acquire('x', { signal: controller.signal });
    controller.abort();
    await assert.rejects(aborted, (e: unknown) => (e as Error).name === 'AbortError');
    const lease = await locks.acquire('y', { signal: AbortSignal.timeout(5_000) });
    assert.deepEqual(await heldKeys(schema, await pidOf(locks)), [key(schema, 'y')], 'only "y" is held: the aborted "x" was never taken');
    // An unhandled rejection is reported after the microtasks of the tick it happened in.
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(unhandled, []);
    await lease.release();
  });

  it('close() while waiting rejects the acquire, ends the session with its waiter key, and the holder then sends no NOTIFY', { timeout: 15_000 }, async () => {
    const schema = await testSchema();
    const a = registry(schema);
    const b = registry(schema, { pollIntervalMs: 60_000 });
    const lease = await a.acquire('x');
    const standby = await standBy(b, 'x');
    const pid = await pidOf(b);
    await sharedKeysBecome(schema, pid, [waitKey(schema, 'x')], 'B holds the waiter key');
    await b.close();
    await assert.rejects(standby.settled, code(ErrorCode.LockUnavailable));
    await waitUntil(async () => (await backends(schema, b.applicationName)).length === 0, { message: 'B to end its session' });
    const notifications = await countReleaseNotifications(schema);
    await lease.release();
    await barrier(a);
    assert.equal(notifications(), 0, 'no standby left: no NOTIFY');
    assert.equal(lease.signal.aborted, true);
  });
});

describe('PostgresLockRegistry red team: lease signal made on demand', () => {
  it('a signal first read after release, loss or close is aborted with that reason, stably', { timeout: 15_000 }, async () => {
    const schema = await testSchema();
    const a = registry(schema);

    const released = await a.acquire('r');
    await released.release();
    const reason = released.signal.reason as Error;
    assert.equal(released.signal.aborted, true);
    assert.ok(isEskitError(reason, ErrorCode.LockUnavailable));
    assert.match(reason.message, /was released/);
    assert.equal(released.signal.reason, reason, 'the same reason on every read');

    const lost = await a.acquire('l');
    const pid = await pidOf(a);
    await schema.pool.query('SELECT pg_terminate_backend($1)', [pid]);
    await waitUntil(() => a.connectionPid !== pid, { message: 'A to notice the killed session' });
    await lost.release(); // after the loss: must not replace its reason
    assert.equal(lost.signal.aborted, true);
    assert.match((lost.signal.reason as Error).message, /Lost the lease on "l"/);
    assert.ok(isEskitError(lost.signal.reason, ErrorCode.LockUnavailable));

    const watched = await a.acquire('w');
    const seen: unknown[] = [];
    watched.signal.addEventListener('abort', () => seen.push(watched.signal.reason));
    const closed = await a.acquire('c');
    await a.close();
    assert.match((closed.signal.reason as Error).message, /the lock registry closed/);
    assert.equal(seen.length, 1, 'a listener added before the end fires once');
    assert.equal(seen[0], watched.signal.reason);
    await watched.release();
    assert.equal(seen.length, 1);
  });
});

describe('PostgresLockRegistry red team: fencing tokens', () => {
  it('tokens grow across holders: three registries on one schema (migrating at once), mixed names, batched takes, a killed session', { timeout: 20_000 }, async () => {
    const schema = await testSchema();
    const nodes = [registry(schema), registry(schema), registry(schema)];
    // Created and migrated concurrently on a fresh schema.
    const order: number[] = [];
    const hot = async (locks: PostgresLockRegistry, rounds: number): Promise<void> => {
      for (let i = 0; i < rounds; i++) {
        const lease = await locks.acquire('hot');
        order.push(lease.fencingToken); // in holding order: one holder at a time, one process
        if (i % 3 === 0) await (await locks.acquire(`side-${i}`)).release();
        await lease.release();
      }
    };
    await Promise.all(nodes.map((locks) => hot(locks, 6)));
    assert.equal(order.length, 18);
    for (let i = 1; i < order.length; i++) assert.ok((order[i] as number) > (order[i - 1] as number), `hot tokens in holding order: ${order.join(',')}`);

    // Several names granted in one take statement each get their own token.
    const many = await Promise.all(['m1', 'm2', 'm3', 'm4', 'm5'].map((name) => (nodes[0] as PostgresLockRegistry).acquire(name)));
    const tokens = many.map((lease) => lease.fencingToken);
    assert.equal(new Set(tokens).size, 5);
    assert.ok(Math.min(...tokens) > Math.max(...order));
    await Promise.all(many.map((lease) => lease.release()));

    const pid = await pidOf(nodes[1] as PostgresLockRegistry);
    await schema.pool.query('SELECT pg_terminate_backend($1)', [pid]);
    await waitUntil(() => nodes[1]?.connectionPid !== pid, { message: 'the session to end' });
    const afterKill = await (nodes[1] as PostgresLockRegistry).acquire('m1');
    assert.ok(afterKill.fencingToken > Math.max(...tokens), 'a new session goes on from the sequence');
    await afterKill.release();
  });
});

describe('PostgresLockRegistry red team: linger timer', () => {
  it('never closes a connection that holds or awaits a lock when the timer armed before fires; closes sessionTimeoutMs after the last release', { timeout: 20_000 }, async () => {
    const T = 800;
    const schema = await testSchema();
    const a = registry(schema, { sessionTimeoutMs: T, pollIntervalMs: 60_000 });
    const other = registry(schema);
    const elapsed = (since: number) => () => performance.now() - since >= 0;
    await (await a.acquire('x')).release();
    const idleAt = performance.now();
    const pid = await pidOf(a);
    // Waiting for time is the point here: the timer armed at idleAt fires at idleAt + T.
    await waitUntil(elapsed(idleAt + T / 2), { message: 'half the linger' });
    const held = await a.acquire('x');
    await waitUntil(elapsed(idleAt + T * 1.5), { timeoutMs: 5_000, message: 'the linger timer to fire while held' });
    assert.deepEqual(await backends(schema, a.applicationName), [pid], 'still connected while holding');
    assert.equal(held.signal.aborted, false);
    assert.deepEqual(await heldKeys(schema, pid), [key(schema, 'x')]);

    // Awaiting a lock, past another linger period.
    const blocker = await other.acquire('w');
    const standby = await standBy(a, 'w');
    await held.release();
    const releasedAt = performance.now();
    await waitUntil(elapsed(releasedAt + T * 1.5), { timeoutMs: 5_000, message: 'a linger period while waiting' });
    assert.deepEqual(await backends(schema, a.applicationName), [pid], 'still connected while waiting');
    await blocker.release();
    const got = await waitUntil(() => standby.state.lease, { timeoutMs: WAKE_MS, message: 'A woken by NOTIFY' });
    const lastRelease = performance.now();
    await got.release();
    await waitUntil(async () => (await backends(schema, a.applicationName)).length === 0, { timeoutMs: 5_000, message: 'the idle connection to close' });
    const idleFor = performance.now() - lastRelease;
    assert.ok(idleFor >= T, `closed ${idleFor.toFixed(0)} ms after the last release, not before ${T}`);
  });
});

describe('PostgresLockRegistry red team: close() and a dying connection', () => {
  it('close() right after a release lets that release (and its NOTIFY) land: the standby is woken, not left to its poll', { timeout: 15_000 }, async () => {
    const schema = await testSchema();
    const a = registry(schema);
    const b = registry(schema, { pollIntervalMs: 60_000 });
    const lease = await a.acquire('x');
    const other = await a.acquire('z');
    const standby = await standBy(b, 'x');
    await sharedKeysBecome(schema, await pidOf(b), [waitKey(schema, 'x')], 'B holds the waiter key');
    // z's release is on the wire, x's waits behind it; close() sees no lease left to release itself.
    const first = other.release();
    const released = lease.release();
    await a.close();
    await Promise.all([first, released]);
    const taken = await Promise.race([standby.settled, new Promise<undefined>((resolve) => setTimeout(resolve, WAKE_MS, undefined))]);
    assert.ok(taken, `the standby was not woken within ${WAKE_MS} ms: the release died with the session`);
  });

  it('a take answered just before the session was terminated grants nothing on the dead connection: the lease comes from a live session', { timeout: 20_000 }, async () => {
    const schema = await testSchema();
    const a = registry(schema);
    await (await a.acquire('warm-up')).release(); // connected and migrated
    const pid = await pidOf(a);
    const acquired = a.acquire('x');
    // The take is on the wire after this tick's microtasks. Blocking the event loop while the server
    // answers it and is then terminated puts the answer and the FATAL in one socket read.
    await new Promise<void>((resolve) =>
      setImmediate(() => {
        execFileSync('psql', [POSTGRES_URL, '-qAtc', `SELECT pg_sleep(0.3); SELECT pg_terminate_backend(${pid}); SELECT pg_sleep(0.2);`]);
        resolve();
      }),
    );
    const lease = await acquired;
    assert.equal(lease.signal.aborted, false);
    const now = await pidOf(a);
    assert.notEqual(now, pid, 'the lease is on a new session');
    assert.deepEqual(await heldKeys(schema, now), [key(schema, 'x')], 'the live session holds x');
  });
});
