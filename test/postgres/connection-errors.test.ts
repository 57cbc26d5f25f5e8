import assert from 'node:assert/strict';
import { createConnection, createServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { afterEach, describe, it } from 'node:test';
import { ConnectionError, ErrorCode, isEskitError } from '../../src/core/errors.js';
import type { EskitError } from '../../src/core/errors.js';
import { silentLogger } from '../../src/core/logger.js';
import { PostgresCheckpointStore, PostgresDeadLetterStore, PostgresEventStore } from '../../src/postgres/index.js';
import { isTransient } from '../../src/subscription/checkpointing.js';
import { Subscription } from '../../src/subscription/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { createTestSchema, POSTGRES_URL } from '../support/postgres.js';
import { capturingLogger } from './lock-helpers.js';

let cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  const pending = cleanups.reverse();
  cleanups = [];
  for (const cleanup of pending) await cleanup();
});

/** The test database's URL with another host, port, database or password. */
function urlWith(change: { host?: string; port?: number; database?: string; password?: string }): string {
  const url = new URL(POSTGRES_URL);
  if (change.host !== undefined) url.hostname = change.host;
  if (change.port !== undefined) url.port = String(change.port);
  if (change.database !== undefined) url.pathname = `/${change.database}`;
  if (change.password !== undefined) url.password = change.password;
  return url.toString();
}

/** A port on 127.0.0.1 that nothing listens on (it was free a moment ago). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** From now on, connections to `port` reach the test database (the server "came back"). */
async function forwardTo(port: number): Promise<{ close(): Promise<void> }> {
  const target = new URL(POSTGRES_URL);
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = createConnection({ host: target.hostname, port: Number(target.port || 5432) });
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => undefined);
    }
    client.pipe(upstream).pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The rejection is ESKIT_CONNECTION naming this host, port and database, with the driver's error as cause. */
function connectionError(expected: { host: string; port: number; database: string; transient: boolean; cause?: string }) {
  return (error: unknown): boolean => {
    assert.ok(isEskitError(error, ErrorCode.Connection), `expected ESKIT_CONNECTION, got ${String(error)}`);
    const e = error as ConnectionError;
    assert.deepEqual({ host: e.host, port: e.port, database: e.database, transient: e.transient }, {
      host: expected.host,
      port: expected.port,
      database: expected.database,
      transient: expected.transient,
    });
    assert.match(e.message, new RegExp(`host ${expected.host}, port ${expected.port}, database "${expected.database}"`));
    assert.match(e.message, /Check /);
    assert.doesNotMatch(e.message, /secret-pw/);
    assert.ok(e.cause !== undefined, 'the cause is kept');
    if (expected.cause) assert.equal((e.cause as { code?: unknown }).code, expected.cause);
    return true;
  };
}

describe('PostgreSQL connection failures', () => {
  it('a closed port is ESKIT_CONNECTION (transient), with or without migrate, from every store, never ESKIT_MIGRATION, and without the password', async () => {
    const port = await freePort();
    const connectionString = urlWith({ host: '127.0.0.1', port, password: 'secret-pw' });
    const expected = { host: '127.0.0.1', port, database: new URL(POSTGRES_URL).pathname.slice(1), transient: true, cause: 'ECONNREFUSED' };
    for (const migrate of [true, false]) {
      const store = new PostgresEventStore({ connectionString, migrate, logger: silentLogger });
      cleanups.push(() => store.close());
      await assert.rejects(store.append('s', [{ type: 'Noted', data: {} }]), connectionError(expected));
      await assert.rejects(store.headPosition(), connectionError(expected));
      const checkpoints = new PostgresCheckpointStore({ connectionString, migrate });
      cleanups.push(() => checkpoints.close());
      await assert.rejects(checkpoints.load('x'), connectionError(expected));
      const deadLetters = new PostgresDeadLetterStore({ connectionString, migrate });
      cleanups.push(() => deadLetters.close());
      await assert.rejects(deadLetters.list(), connectionError(expected));
    }
    const store = new PostgresEventStore({ connectionString, logger: silentLogger });
    cleanups.push(() => store.close());
    await assert.rejects(store.migrate(), connectionError(expected));
  });

  it('a host that does not resolve is ESKIT_CONNECTION naming that host', async () => {
    const connectionString = urlWith({ host: 'eskit-no-such-host.invalid' });
    const store = new PostgresEventStore({ connectionString, migrate: false, logger: silentLogger });
    cleanups.push(() => store.close());
    await assert.rejects(store.headPosition(), connectionError({ host: 'eskit-no-such-host.invalid', port: Number(new URL(POSTGRES_URL).port || 5432), database: new URL(POSTGRES_URL).pathname.slice(1), transient: true, cause: 'ENOTFOUND' }));
  });

  it('a database that does not exist is ESKIT_CONNECTION, not transient, and a subscription on it fails with it instead of retrying', async () => {
    const connectionString = urlWith({ database: 'eskit_no_such_database' });
    const target = new URL(POSTGRES_URL);
    const expected = { host: target.hostname, port: Number(target.port || 5432), database: 'eskit_no_such_database', transient: false, cause: '3D000' };
    const store = new PostgresEventStore({ connectionString, logger: silentLogger });
    cleanups.push(() => store.close());
    await assert.rejects(store.append('s', [{ type: 'Noted', data: {} }]), connectionError(expected));

    const checkpoints = new PostgresCheckpointStore({ store });
    const logger = capturingLogger();
    const subscription = new Subscription({ name: 'sub', store, checkpoints, logger, pollIntervalMs: 20, handler: () => undefined });
    cleanups.push(() => subscription.stop());
    await subscription.start();
    await assert.rejects(subscription.done, connectionError(expected));
  });

  it('a subscription waits out a database that refuses connections, and goes on once it answers', async () => {
    const schema = await createTestSchema({ create: false });
    cleanups.push(() => schema.drop());
    const writer = new PostgresEventStore({ pool: schema.pool, schema: schema.name, logger: silentLogger });
    const written = await writer.append('s', [{ type: 'Noted', data: { n: 1 } }]);

    const port = await freePort();
    const store = new PostgresEventStore({ connectionString: urlWith({ host: '127.0.0.1', port }), schema: schema.name, logger: silentLogger });
    cleanups.push(() => store.close());
    const checkpoints = new PostgresCheckpointStore({ store });
    const logger = capturingLogger();
    const seen: number[] = [];
    const subscription = new Subscription({ name: 'sub', store, checkpoints, logger, pollIntervalMs: 20, handler: (event) => void seen.push(event.position) });
    cleanups.push(() => subscription.stop());
    await subscription.start();
    const warned = await waitUntil(() => logger.lines.find((line) => line.level === 'warn' && /retrying/.test(line.message)), { message: 'a warning that it retries' });
    assert.ok(isEskitError(warned.fields.err, ErrorCode.Connection), `the warning carries the connection error: ${String(warned.fields.err)}`);
    assert.match((warned.fields.err as EskitError).message, new RegExp(`port ${port}`));

    const forwarder = await forwardTo(port);
    cleanups.push(() => forwarder.close());
    await waitUntil(() => seen.includes(written.position), { message: 'the event, once the database answers', timeoutMs: 10_000 });
    assert.equal((await subscription.status()).state, 'leading');
  });

  it('a connection string that is not a PostgreSQL URL is refused when the store is created, without echoing it', () => {
    for (const create of [
      () => new PostgresEventStore({ connectionString: 'garbage' }),
      () => new PostgresCheckpointStore({ connectionString: 'garbage' }),
      () => new PostgresDeadLetterStore({ connectionString: 'garbage' }),
      () => new PostgresEventStore({ connectionString: 'host=db password=garbage' }),
    ]) {
      assert.throws(create, (error: unknown) => {
        assert.ok(isEskitError(error, ErrorCode.InvalidArgument), String(error));
        assert.match((error as Error).message, /postgres:\/\/user:password@host:5432\/database/);
        assert.doesNotMatch((error as Error).message, /garbage/);
        return true;
      });
    }
  });

  it('runners retry a transient ConnectionError and report one that waiting cannot fix', () => {
    const target = { host: 'h', port: 5432, database: 'd' };
    assert.equal(isTransient(new ConnectionError(target, 'refused', { cause: new Error('x'), transient: true })), true);
    assert.equal(isTransient(new ConnectionError(target, 'no such database', { cause: new Error('x'), transient: false })), false);
    // A copy of the class from another copy of the package: judged by code and field.
    assert.equal(isTransient({ code: ErrorCode.Connection, message: 'refused', transient: true }), true);
    assert.equal(isTransient({ code: ErrorCode.Connection, message: 'refused' }), false);
  });
});
