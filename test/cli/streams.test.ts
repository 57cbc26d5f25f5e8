// eskit streams delete|truncate|archive on SQLite and PostgreSQL: confirmation, the operation, its refusals.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { EventStore } from '../../src/core/store.js';
import { PostgresEventStore } from '../../src/postgres/index.js';
import { SqliteEventStore } from '../../src/sqlite/index.js';
import { collect } from '../../src/testing/conformance/context.js';
import { createTestSchema } from '../support/postgres.js';
import { removeDatabase, tempDatabasePath } from '../sqlite/helpers.js';
import { cli, parseJson } from './helpers.js';

interface Target {
  store: EventStore;
  db: string[];
  stop(): Promise<void>;
}

async function sqliteTarget(): Promise<Target> {
  const path = tempDatabasePath('cli-streams');
  const store = new SqliteEventStore({ path });
  return {
    store,
    db: ['--db', `sqlite:${path}`],
    stop: async () => {
      await store.close();
      removeDatabase(path);
    },
  };
}

async function postgresTarget(): Promise<Target> {
  const schema = await createTestSchema({ create: false, prefix: 'eskit_cli_streams' });
  const store = new PostgresEventStore({ connectionString: schema.connectionString, schema: schema.name });
  await store.migrate();
  return {
    store,
    db: ['--db', schema.connectionString, '--schema', schema.name],
    stop: async () => {
      await store.close();
      await schema.drop();
    },
  };
}

for (const [kind, open] of [['sqlite', sqliteTarget], ['postgres', postgresTarget]] as const) {
  describe(`eskit streams on ${kind}`, () => {
    let target: Target;
    const run = (...args: string[]) => cli([...args, ...target.db]);
    const seed = async (stream: string, count: number): Promise<void> => {
      for (let i = 1; i <= count; i++) await target.store.append(stream, [{ type: 'A', data: i }]);
    };

    before(async () => {
      target = await open();
    });
    after(async () => {
      await target?.stop();
    });

    it('delete without --yes says what it would delete, exits 1 and deletes nothing', async () => {
      await seed('cart-1', 3);
      const result = await run('streams', 'delete', 'cart-1');
      assert.equal(result.code, 1);
      assert.match(result.stderr, /this would delete stream "cart-1" \(at version 3\)\. Add --yes to do it: eskit streams delete cart-1 --expected-version 3 --yes/);
      assert.equal(await target.store.streamVersion('cart-1'), 3);
    });

    it('delete --yes soft-deletes: the stream reads as absent, and the next append starts it again', async () => {
      const result = await run('streams', 'delete', 'cart-1', '--yes');
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /Deleted stream "cart-1" at version 3 \(its events kept in deleted_events, out of every read\); \$stream\.deleted at position \d+\. The next append starts it again at version 1\./);
      assert.equal(await target.store.streamVersion('cart-1'), 0);
      assert.equal((await target.store.append('cart-1', [{ type: 'A', data: 'again' }])).nextExpectedVersion, 1);
      const events = await run('events', 'tail', '--from', '1', '--no-follow', '--json');
      assert.equal(events.code, 0, events.stderr);
      const types = events.stdout.trim().split('\n').map((line) => (JSON.parse(line) as { type: string }).type);
      assert.deepEqual(types, ['$stream.deleted', 'A'], 'tail prints the lifecycle event (a raw read) and none of the deleted events');
    });

    it('delete --hard --refuse-appends --expected-version --json', async () => {
      await seed('cart-2', 2);
      const wrong = await run('streams', 'delete', 'cart-2', '--hard', '--expected-version', '5', '--yes');
      assert.equal(wrong.code, 1);
      assert.match(wrong.stderr, /stream "cart-2" is at version 2, not the --expected-version given/);
      const result = await run('streams', 'delete', 'cart-2', '--hard', '--refuse-appends', '--expected-version', '2', '--yes', '--json');
      assert.equal(result.code, 0, result.stderr);
      const outcome = parseJson<{ stream: string; version: number; hard: boolean; appends: string; position: number }>(result);
      assert.deepEqual({ ...outcome, position: typeof outcome.position }, { stream: 'cart-2', version: 2, hard: true, appends: 'refuse', position: 'number' });
      await assert.rejects(target.store.append('cart-2', [{ type: 'A', data: 1 }]), (e: unknown) => (e as { code?: string }).code === 'ESKIT_STREAM_DELETED');
      const [deleted] = await collect(target.store.readAll({ types: ['$stream.deleted'], after: outcome.position - 1 }));
      assert.deepEqual(deleted?.data, { version: 2, hard: true, appends: 'refuse' });
    });

    it('delete of an absent stream exits 1 and says so', async () => {
      const result = await run('streams', 'delete', 'nope', '--yes');
      assert.equal(result.code, 1);
      assert.match(result.stderr, /no stream "nope" \(it has no events: never written, or deleted already\)/);
    });

    it('truncate --before: confirmation, bounds, the truncation', async () => {
      await seed('order-1', 5);
      const missing = await run('streams', 'truncate', 'order-1', '--yes');
      assert.equal(missing.code, 2);
      assert.match(missing.stderr, /--before <version> is required/);
      assert.equal((await run('streams', 'truncate', 'order-1', '--before', '1', '--yes')).code, 2);
      const beyond = await run('streams', 'truncate', 'order-1', '--before', '6', '--yes');
      assert.equal(beyond.code, 1);
      assert.match(beyond.stderr, /is at version 5, so --before 6 would remove its last event/);
      const unconfirmed = await run('streams', 'truncate', 'order-1', '--before', '4');
      assert.equal(unconfirmed.code, 1);
      assert.match(unconfirmed.stderr, /Add --yes to do it: eskit streams truncate order-1 --before 4 --expected-version 5 --yes/);
      assert.equal((await collect(target.store.readStream('order-1'))).length, 5);
      const result = await run('streams', 'truncate', 'order-1', '--before', '4', '--expected-version', '5', '--yes');
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /Truncated stream "order-1" before version 4 \(it is at version 5\); \$stream\.truncated at position \d+\./);
      assert.deepEqual((await collect(target.store.readStream('order-1'))).map((e) => e.streamVersion), [4, 5]);
      const read = await run('events', 'read', 'order-1');
      assert.equal(read.code, 0, read.stderr);
      assert.equal(read.stdout.trim().split('\n').length, 2);
    });

    it('archive: confirmation, the archive, events read of it (and the hint when read as a stream)', async () => {
      await seed('order-9', 3);
      const unconfirmed = await run('streams', 'archive', 'order-9');
      assert.equal(unconfirmed.code, 1);
      assert.match(unconfirmed.stderr, /this would archive stream "order-9" \(at version 3\).*Add --yes to do it: eskit streams archive order-9 --expected-version 3 --yes/);
      assert.equal(await target.store.streamVersion('order-9'), 3);
      const wrong = await run('streams', 'archive', 'order-9', '--expected-version', '2', '--yes');
      assert.equal(wrong.code, 1);
      assert.match(wrong.stderr, /stream "order-9" is at version 3, not the --expected-version given/);
      const result = await run('streams', 'archive', 'order-9', '--expected-version', '3', '--yes', '--json');
      assert.equal(result.code, 0, result.stderr);
      const outcome = parseJson<{ stream: string; version: number; position: number }>(result);
      assert.deepEqual([outcome.stream, outcome.version], ['order-9', 3]);
      assert.equal(await target.store.streamVersion('order-9'), 0);
      const asStream = await run('events', 'read', 'order-9');
      assert.equal(asStream.code, 1);
      assert.match(asStream.stderr, /no stream "order-9" \(it has no events: it was archived\)\. Read it from the archive: eskit events read order-9 --archived/);
      const archived = await run('events', 'read', 'order-9', '--archived', '--json');
      assert.equal(archived.code, 0, archived.stderr);
      assert.deepEqual(archived.stdout.trim().split('\n').map((line) => (JSON.parse(line) as { streamVersion: number }).streamVersion), [1, 2, 3]);
      const none = await run('events', 'read', 'order-1', '--archived');
      assert.equal(none.code, 1);
      assert.match(none.stderr, /no archived events of stream "order-1"/);
      await assert.rejects(target.store.append('order-9', [{ type: 'A', data: 4 }]), (e: unknown) => (e as { code?: string }).code === 'ESKIT_STREAM_DELETED');
    });

    it('--help lists the commands under streams', async () => {
      const result = await cli(['streams', '--help']);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /eskit streams delete <stream>/);
      assert.match(result.stdout, /eskit streams truncate <stream>/);
      assert.match(result.stdout, /eskit streams archive <stream>/);
    });
  });
}
