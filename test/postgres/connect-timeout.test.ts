import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import pg from 'pg';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import type { ConnectionError } from '../../src/core/errors.js';
import { silentLogger } from '../../src/core/logger.js';
import { PostgresLockRegistry, PostgresCheckpointStore, PostgresEventStore } from '../../src/postgres/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { blackHoleProxy } from '../support/blackhole.js';
import { POSTGRES_URL } from '../support/postgres.js';
import { capturingLogger } from './lock-helpers.js';

let cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  const pending = cleanups.reverse();
  cleanups = [];
  for (const cleanup of pending) await cleanup();
});

/** Settles `promise` into a value a waitUntil can poll: undefined until it settles. */
function outcome(promise: Promise<unknown>): () => { error: unknown } | { value: unknown } | undefined {
  let settled: { error: unknown } | { value: unknown } | undefined;
  promise.then(
    (value) => (settled = { value }),
    (error: unknown) => (settled = { error }),
  );
  return () => settled;
}

function timedOut(settled: { error: unknown } | { value: unknown }): void {
  assert.ok('error' in settled, 'the call must fail, not succeed');
  assert.ok(isEskitError(settled.error, ErrorCode.Connection), `expected ESKIT_CONNECTION, got ${String(settled.error)}`);
  const error = settled.error as ConnectionError;
  assert.match(error.message, /did not answer within 10000 ms/);
  assert.equal(error.transient, true);
}

describe('PostgreSQL connect timeout', () => {
  it('pools eskit creates from connectionString get a 10 s connect timeout and TCP keepalive; a pool you pass is left as it is', async () => {
    const store = new PostgresEventStore({ connectionString: POSTGRES_URL, logger: silentLogger });
    const checkpoints = new PostgresCheckpointStore({ connectionString: POSTGRES_URL });
    const yours = new pg.Pool({ connectionString: POSTGRES_URL });
    const onYours = new PostgresEventStore({ pool: yours, logger: silentLogger });
    try {
      for (const pool of [store.pool, checkpoints.pool]) {
        assert.equal(pool.options.connectionTimeoutMillis, 10_000);
        assert.equal(pool.options.keepAlive, true);
      }
      assert.equal(onYours.pool, yours);
      assert.equal(yours.options.connectionTimeoutMillis, undefined);
      assert.equal(yours.options.keepAlive, undefined);
    } finally {
      await Promise.all([store.close(), checkpoints.close(), onYours.close()]);
      await yours.end();
    }
  });

  it('a server that accepts connections and never answers: calls, the LISTEN connection and the lock connection give up after 10 s', async () => {
    const proxy = await blackHoleProxy();
    proxy.blackHole();
    const store = new PostgresEventStore({ connectionString: proxy.connectionString, migrate: false, logger: silentLogger });
    cleanups.push(() => store.close());
    const checkpoints = new PostgresCheckpointStore({ connectionString: proxy.connectionString, migrate: false });
    cleanups.push(() => checkpoints.close());
    // Your pool has no timeout of its own, but the LISTEN connection is eskit's: it gets one.
    const yours = new pg.Pool({ connectionString: proxy.connectionString });
    yours.on('error', () => undefined);
    cleanups.push(() => yours.end());
    const logger = capturingLogger();
    const listening = new PostgresEventStore({ pool: yours, logger });
    cleanups.push(() => listening.close());
    const locks = new PostgresLockRegistry({ connectionString: proxy.connectionString, logger: silentLogger });
    cleanups.push(() => locks.close());
    // Closing the proxy first ends whatever still hangs, so that the closes above can finish.
    cleanups.push(() => proxy.close());

    const head = outcome(store.headPosition());
    const load = outcome(checkpoints.load('x'));
    const lease = outcome(locks.acquire('x'));
    listening.onAppend(() => undefined);
    const started = performance.now();
    const wait = { timeoutMs: 20_000, intervalMs: 50 };
    timedOut(await waitUntil(head, { ...wait, message: 'headPosition() to give up' }));
    timedOut(await waitUntil(load, { ...wait, message: 'load() to give up' }));
    const refused = await waitUntil(lease, { ...wait, message: 'acquire() to give up' });
    assert.ok('error' in refused && isEskitError(refused.error, ErrorCode.LockUnavailable), `expected ESKIT_LOCK_UNAVAILABLE, got ${JSON.stringify(refused)}`);
    const port = new URL(proxy.connectionString).port;
    assert.match((refused.error as Error).message, new RegExp(`host 127\\.0\\.0\\.1, port ${port}, database .*did not answer within 10000 ms`));
    const warned = await waitUntil(() => logger.lines.find((line) => line.level === 'warn' && /LISTEN connection/.test(line.message)), {
      ...wait,
      message: 'the LISTEN connection to give up',
    });
    assert.match(String((warned.fields.err as Error).message), /timeout/);
    const elapsed = performance.now() - started;
    assert.ok(elapsed >= 9_000 && elapsed < 15_000, `gave up after ${Math.round(elapsed)} ms`);
  });
});
