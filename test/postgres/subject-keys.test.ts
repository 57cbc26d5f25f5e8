// What PostgresSubjectKeyStore and the event store's key cache do beyond the SubjectKeyStore contract
// (personal-data-conformance.test.ts runs that): forgets heard over LISTEN while keys may be cached,
// the cache dropped when LISTEN is lost (nothing cached until it is back) and again when it is back,
// VACUUM after forget, the subject lock under SERIALIZABLE.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import { createServer } from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import type pg from 'pg';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import { silentLogger } from '../../src/core/logger.js';
import type { Logger } from '../../src/core/logger.js';
import { EventRegistry } from '../../src/core/registry.js';
import { MemorySubjectKeyStore } from '../../src/memory/memory-subject-key-store.js';
import { postgres, PostgresSubjectKeyStore } from '../../src/postgres/index.js';
import type { PostgresBackend } from '../../src/postgres/index.js';
import { collect } from '../../src/testing/conformance/context.js';
import { waitUntil } from '../../src/testing/wait.js';
import { connectTestPool, createTestSchema, POSTGRES_URL } from '../support/postgres.js';
import type { TestSchema } from '../support/postgres.js';

type Contact = { type: 'ContactAdded'; data: { id: string; email: string } } | { type: 'Noted'; data: { text: string } };

const registry = (): EventRegistry<Contact> =>
  new EventRegistry<Contact>({ ContactAdded: { personal: { subject: (data) => data.id, fields: ['email'] } }, Noted: {} });

let cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  cleanups = [];
});

async function freshSchema(): Promise<TestSchema> {
  const schema = await createTestSchema({ create: false });
  cleanups.push(() => schema.drop());
  return schema;
}

/** A backend on `schema` with a pool of its own (another process's), closed after the test. */
async function open(schema: string, options: { keyCacheMs?: number; listenLingerMs?: number; logger?: Logger } = {}): Promise<PostgresBackend<Contact>> {
  const pool = await connectTestPool(2);
  const backend = postgres<Contact>({ pool, schema, registry: registry(), leaderElection: false, ...options });
  cleanups.push(async () => {
    await backend.close();
    await pool.end();
  });
  return backend;
}

/** Every call of the store's key cache eviction: the kids, or undefined for "everything". */
function spyOnEvict(backend: PostgresBackend<Contact>): Array<readonly string[] | undefined> {
  const personal = backend.store.personalData;
  assert.ok(personal !== undefined);
  const calls: Array<readonly string[] | undefined> = [];
  const evict = personal.evict.bind(personal);
  personal.evict = (kids) => {
    calls.push(kids);
    evict(kids);
  };
  return calls;
}

async function kidOf(backend: PostgresBackend<Contact>, stream: string): Promise<string> {
  const [event] = await collect(backend.store.readStream(stream, { raw: true }));
  return (event?.data as { email: { kid: string } }).email.kid;
}

describe('PostgreSQL subject keys and the key cache', () => {
  it('a store LISTENs for forgets only while its key cache may hold keys', async () => {
    const schema = await freshSchema();
    const backend = await open(schema.name, { keyCacheMs: 300, listenLingerMs: 0 });
    await backend.store.append('notes', [{ type: 'Noted', data: { text: 'no personal data' } }]);
    await collect(backend.store.readAll());
    assert.equal(backend.store.listening, false, 'no key was read: no LISTEN connection');
    await backend.store.append('contact-ann', [{ type: 'ContactAdded', data: { id: 'ann', email: 'ann@example.com' } }]);
    await waitUntil(() => backend.store.listening, { message: 'the store to LISTEN once it holds a key' });
    await waitUntil(() => !backend.store.listening, { message: 'the store to stop listening once its cached keys expired' });
  });

  it('another process\'s forget drops the key from this store\'s cache by its id, at once', async () => {
    const schema = await freshSchema();
    const here = await open(schema.name);
    const there = await open(schema.name);
    const evicted = spyOnEvict(here);
    await here.store.append('contact-bob', [{ type: 'ContactAdded', data: { id: 'bob', email: 'bob@example.com' } }]);
    const kid = await kidOf(here, 'contact-bob');
    await waitUntil(() => here.store.listening, { message: 'the store to LISTEN' });
    assert.ok((await here.store.personalData?.keysById([kid]))?.get(kid) instanceof Uint8Array, 'the live key, cached for 30 s');

    await there.store.forget('bob');
    await waitUntil(() => evicted.some((kids) => kids?.includes(kid)), { message: 'the forget to be heard' });
    assert.equal((await here.store.personalData?.keysById([kid]))?.get(kid), null, 'the cache asked the table again: destroyed');
    await assert.rejects(
      here.store.append('contact-bob', [{ type: 'ContactAdded', data: { id: 'bob', email: 'bob@example.com' } }]),
      (error) => isEskitError(error, ErrorCode.SubjectForgotten),
    );
  });

  it('the LISTEN connection lost and back: the whole key cache is dropped when it is lost and again when it is back, as forgets meanwhile were not heard', async () => {
    const schema = await freshSchema();
    // Silent: the lost connection is reported as a warning.
    const here = await open(schema.name, { logger: silentLogger });
    const evicted = spyOnEvict(here);
    const listeningAtEviction: boolean[] = [];
    const spied = here.store.personalData?.evict.bind(here.store.personalData);
    (here.store.personalData as NonNullable<typeof here.store.personalData>).evict = (kids) => {
      if (kids === undefined) listeningAtEviction.push(here.store.listening);
      spied?.(kids);
    };
    await here.store.append('contact-cy', [{ type: 'ContactAdded', data: { id: 'cy', email: 'cy@example.com' } }]);
    await waitUntil(() => here.store.listening, { message: 'the store to LISTEN' });
    // LISTEN in place once already: that first (re)connect dropped the cache too.
    await waitUntil(() => evicted.includes(undefined), { message: 'the first LISTEN to drop the cache' });
    evicted.length = 0;
    const { rows } = await schema.pool.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE application_name = $1', [`eskit listen ${schema.name}`]);
    assert.equal(rows.length, 1, 'one LISTEN connection');
    listeningAtEviction.length = 0;
    await schema.pool.query('SELECT pg_terminate_backend($1)', [rows[0]?.pid]);
    await waitUntil(() => here.store.listening && listeningAtEviction.length >= 2, { message: 'the lost and the reconnected LISTEN to drop the whole cache' });
    assert.equal(listeningAtEviction[0], false, 'dropped once lost, before listening again');
    assert.equal(listeningAtEviction.at(-1), true, 'and again once listening');
  });

  it('the LISTEN connection down and not back: keys read meanwhile are not cached, so another process\'s forget is seen at once', async () => {
    const schema = await freshSchema();
    const here = await open(schema.name, { logger: silentLogger });
    const there = await open(schema.name);
    await here.store.append('contact-dot', [{ type: 'ContactAdded', data: { id: 'dot', email: 'dot@example.com' } }]);
    const kid = await kidOf(here, 'contact-dot');
    await waitUntil(() => here.store.listening, { message: 'the store to LISTEN' });
    // Its reconnects hang (a server that accepts and never answers), so LISTEN stays down for the test.
    const held: Socket[] = [];
    const silent = createServer((socket) => void held.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const options = here.store.pool.options as { connectionString?: string };
    const url = options.connectionString as string;
    options.connectionString = url.replace(/@[^/]+\//, `@127.0.0.1:${(silent.address() as AddressInfo).port}/`);
    cleanups.push(async () => {
      options.connectionString = url;
      for (const socket of held) socket.destroy();
      silent.close();
    });
    const { rows } = await schema.pool.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE application_name = $1', [`eskit listen ${schema.name}`]);
    await schema.pool.query('SELECT pg_terminate_backend($1)', [rows[0]?.pid]);
    await waitUntil(() => !here.store.listening, { message: 'the LISTEN connection to be lost' });

    assert.ok((await here.store.personalData?.keysById([kid]))?.get(kid) instanceof Uint8Array, 'read from the table (on the pool\'s connection, still up)');
    await there.store.forget('dot');
    assert.equal((await here.store.personalData?.keysById([kid]))?.get(kid), null, 'the key read with LISTEN down was not cached');
    await assert.rejects(
      here.store.append('contact-dot', [{ type: 'ContactAdded', data: { id: 'dot', email: 'dot@example.com' } }]),
      (error) => isEskitError(error, ErrorCode.SubjectForgotten),
    );
  });

  it('forget VACUUMs the table: the old row version holding the key goes (unless an older transaction on the server still sees it)', async (t: TestContext) => {
    const schema = await freshSchema();
    const backend = await open(schema.name);
    const others = await Promise.all(['dee', 'eli', 'fox'].map((subject) => backend.subjectKeys.keyFor(subject)));
    const key = await backend.subjectKeys.keyFor('gus');
    const stats = async (): Promise<{ last_vacuum: Date | null; n_dead_tup: string } | undefined> =>
      (
        await schema.pool.query<{ last_vacuum: Date | null; n_dead_tup: string }>(
          "SELECT last_vacuum, n_dead_tup FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = 'subject_keys'",
          [schema.name],
        )
      ).rows[0];
    assert.equal((await stats())?.last_vacuum, null, 'no VACUUM before the forget');
    await backend.subjectKeys.forget('gus');
    // Before PostgreSQL 15 the statistics arrive a moment later.
    const after = await waitUntil(async () => ((await stats())?.last_vacuum ? stats() : undefined), { message: 'the VACUUM after forget in pg_stat_user_tables' });
    if (after.n_dead_tup !== '0') {
      // Other tests' transactions on the same server: what VACUUM cannot do yet, autovacuum does later.
      t.diagnostic(`VACUUM ran, but an older transaction on the server still sees the old row version (${after.n_dead_tup} dead): the page was not checked`);
      return;
    }
    // The page itself, where pageinspect may be installed (in a transaction rolled back: nothing stays).
    const page = await rawPage(schema.pool, schema.name);
    if (page === undefined) {
      t.diagnostic('pageinspect is not available to this role: the raw page was not checked');
      return;
    }
    assert.ok(!page.includes(Buffer.from(key.key.subarray(0, 8))), 'no 8 bytes of the destroyed key are in the page');
    for (const other of others) assert.ok(page.includes(Buffer.from(other.key)), 'the live keys are (so the search finds keys)');
  });

  it('a pool whose transactions default to SERIALIZABLE: concurrent first keyFor calls through two pools still get one key', async () => {
    const schema = await freshSchema();
    const pools: pg.Pool[] = [];
    const stores = [0, 1].map(() => {
      const keys = new PostgresSubjectKeyStore({ connectionString: `${POSTGRES_URL}?options=-c%20default_transaction_isolation%3Dserializable`, schema: schema.name });
      cleanups.push(() => keys.close());
      pools.push(keys.pool);
      return keys;
    });
    await stores[0]?.keyFor('warm-up');
    const { rows } = await (pools[0] as pg.Pool).query<{ default_transaction_isolation: string }>('SHOW default_transaction_isolation');
    assert.equal(rows[0]?.default_transaction_isolation, 'serializable');
    for (let round = 0; round < 5; round++) {
      const subject = `hal-${round}`;
      const keys = await Promise.all(Array.from({ length: 10 }, (_, index) => (stores[index % 2] as PostgresSubjectKeyStore).keyFor(subject)));
      assert.equal(new Set(keys.map((key) => key.kid)).size, 1, `round ${round}: one key`);
      const [forgotten] = await Promise.all([stores[0]?.forget(subject), stores[1]?.allowNewKey(`${subject}-new`)]);
      assert.equal(forgotten?.keysDestroyed, 1);
    }
  });

  it('text PostgreSQL cannot store: refused before any query where it would be written, found nowhere where it is looked up', async () => {
    const schema = await freshSchema();
    const backend = await open(schema.name);
    const keys = backend.subjectKeys;
    for (const subject of ['nul\u0000inside', 'lone \ud800 surrogate']) {
      for (const call of [() => keys.keyFor(subject), () => keys.forget(subject), () => keys.allowNewKey(subject)]) {
        await assert.rejects(call(), (error) => isEskitError(error, ErrorCode.InvalidArgument));
      }
      assert.equal(await keys.isForgotten(subject), false);
      assert.deepEqual(await keys.keysById([subject]), new Map());
    }
  });

  it('a key store of your own: the backend exposes it, the store caches nothing unless told to and never LISTENs for forgets', async () => {
    const schema = await freshSchema();
    const pool = await connectTestPool(2);
    const own = new MemorySubjectKeyStore();
    const backend = postgres<Contact>({ pool, schema: schema.name, registry: registry(), leaderElection: false, subjectKeys: own });
    cleanups.push(async () => {
      await backend.close();
      await pool.end();
    });
    assert.equal(backend.subjectKeys, own);
    await backend.store.append('contact-ivy', [{ type: 'ContactAdded', data: { id: 'ivy', email: 'ivy@example.com' } }]);
    await own.forget('ivy');
    const [event] = await collect(backend.store.readStream('contact-ivy'));
    assert.deepEqual((event?.data as { email: unknown }).email, { $redacted: true }, 'no key cache: the forget is seen at once');
    assert.equal(backend.store.listening, false);
  });
});

/** Page 0 of `<schema>.subject_keys` as PostgreSQL stores it, or undefined without pageinspect. */
async function rawPage(pool: pg.Pool, schema: string): Promise<Buffer | undefined> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    try {
      await client.query('CREATE EXTENSION IF NOT EXISTS pageinspect');
    } catch {
      return undefined;
    }
    const { rows } = await client.query<{ page: Buffer }>(`SELECT get_raw_page('"${schema}".subject_keys', 0) AS page`);
    return rows[0]?.page;
  } finally {
    await client.query('ROLLBACK').catch(() => undefined);
    client.release();
  }
}
