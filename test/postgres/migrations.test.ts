import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type pg from 'pg';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import { migratePostgres, POSTGRES_MIGRATIONS, PostgresEventStore } from '../../src/postgres/index.js';
import type { PostgresMigration } from '../../src/postgres/index.js';
import { connectTestPool, createTestSchema } from '../support/postgres.js';
import type { TestSchema } from '../support/postgres.js';

let cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  const pending = cleanups.reverse();
  cleanups = [];
  for (const cleanup of pending) await cleanup();
});

async function freshSchema(): Promise<TestSchema> {
  const schema = await createTestSchema({ create: false });
  cleanups.push(() => schema.drop());
  return schema;
}

async function recorded(pool: pg.Pool, schema: string): Promise<{ version: number; name: string }[]> {
  const result = await pool.query<{ version: number; name: string }>(`SELECT version, name FROM "${schema}".migrations ORDER BY version`);
  return result.rows;
}

const latest = POSTGRES_MIGRATIONS.map((m) => ({ version: m.version, name: m.name }));

describe('PostgreSQL migrations', () => {
  it('migrate() creates the schema, records each version once, and is idempotent', async () => {
    const { pool, name } = await freshSchema();
    const store = new PostgresEventStore({ pool, schema: name, migrate: false });
    cleanups.push(() => store.close());
    await store.migrate();
    await store.migrate();
    assert.deepEqual(await migratePostgres(pool, name), [], 'a third run applies nothing');
    assert.deepEqual(await recorded(pool, name), latest);
    const written = await store.append('s', [{ type: 'A', data: 1 }]);
    assert.equal(written.position, 1);
  });

  it('concurrent migrate() from several pools at once: all succeed, each version is applied exactly once', async () => {
    const { name } = await freshSchema();
    const pools = await Promise.all(Array.from({ length: 6 }, () => connectTestPool(1)));
    cleanups.push(async () => void (await Promise.all(pools.map((p) => p.end()))));
    const stores = pools.map((pool) => new PostgresEventStore({ pool, schema: name, migrate: false }));
    const results = await Promise.all(pools.map((pool) => migratePostgres(pool, name)));
    assert.deepEqual(results.flat().sort((a, b) => a - b), latest.map((m) => m.version), 'every version applied by exactly one caller');
    assert.deepEqual(await recorded(pools[0]!, name), latest);
    // And lazily, through stores racing their first appends on another fresh schema.
    const other = await freshSchema();
    const racing = pools.map((pool) => new PostgresEventStore({ pool, schema: other.name }));
    const appended = await Promise.all(racing.map((store, i) => store.append(`s-${i}`, [{ type: 'A', data: i }])));
    assert.deepEqual(appended.map((r) => r.position).sort((a, b) => a - b), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(await recorded(pools[0]!, other.name), latest);
    await Promise.all([...stores, ...racing].map((s) => s.close()));
  });

  it('a store with migrate: false on an unmigrated schema fails with ESKIT_MIGRATION until migrate() runs', async () => {
    const { pool, name } = await freshSchema();
    const store = new PostgresEventStore({ pool, schema: name, migrate: false });
    cleanups.push(() => store.close());
    const isMigration = (e: unknown): boolean => isEskitError(e, ErrorCode.Migration) && /migrate\(\)/.test((e as Error).message);
    await assert.rejects(store.append('s', [{ type: 'A', data: 1 }]), isMigration);
    await assert.rejects(store.headPosition(), isMigration);
    await assert.rejects(store.streamVersion('s'), isMigration);
    await assert.rejects(async () => {
      for await (const _ of store.readAll()) assert.fail('nothing to read');
    }, isMigration);
    await store.migrate();
    assert.equal((await store.append('s', [{ type: 'A', data: 1 }])).nextExpectedVersion, 1);
  });

  it('later migrations are applied in order on top of earlier ones, each recorded', async () => {
    const { pool, name } = await freshSchema();
    const extra: PostgresMigration[] = [
      { version: POSTGRES_MIGRATIONS.length + 1, name: 'test_a', sql: (s) => `CREATE TABLE ${s}.test_a (id int PRIMARY KEY)` },
      { version: POSTGRES_MIGRATIONS.length + 2, name: 'test_b', sql: (s) => `ALTER TABLE ${s}.test_a ADD COLUMN note text; INSERT INTO ${s}.test_a VALUES (1, 'x')` },
    ];
    assert.deepEqual(await migratePostgres(pool, name), latest.map((m) => m.version));
    assert.deepEqual(await migratePostgres(pool, name, [...POSTGRES_MIGRATIONS, extra[0]!]), [extra[0]!.version]);
    assert.deepEqual(await migratePostgres(pool, name, [...POSTGRES_MIGRATIONS, ...extra]), [extra[1]!.version]);
    const row = await pool.query(`SELECT id, note FROM "${name}".test_a`);
    assert.deepEqual(row.rows, [{ id: 1, note: 'x' }]);
    assert.deepEqual(await recorded(pool, name), [...latest, ...extra.map((m) => ({ version: m.version, name: m.name }))]);
    // A database migrated further than this code knows is left alone, and the store still works.
    assert.deepEqual(await migratePostgres(pool, name), []);
    const store = new PostgresEventStore({ pool, schema: name });
    cleanups.push(() => store.close());
    assert.equal((await store.append('s', [{ type: 'A', data: 1 }])).position, 1);
  });

  it('a failing migration is rolled back as a whole, throws ESKIT_MIGRATION, and can be retried', async () => {
    const { pool, name } = await freshSchema();
    const version = POSTGRES_MIGRATIONS.length + 1;
    const broken: PostgresMigration = { version, name: 'broken', sql: (s) => `CREATE TABLE ${s}.half_done (id int); SELECT 1/0` };
    await assert.rejects(migratePostgres(pool, name, [...POSTGRES_MIGRATIONS, broken]), (e: unknown) => {
      return isEskitError(e, ErrorCode.Migration) && /Migration \d+ \(broken\)/.test((e as Error).message);
    });
    assert.deepEqual(await recorded(pool, name), latest, 'the steps before it stay applied; the broken one is not recorded');
    const half = await pool.query(`SELECT to_regclass($1) AS t`, [`"${name}".half_done`]);
    assert.equal(half.rows[0].t, null, 'nothing of the failed step remains');
    const fixed: PostgresMigration = { version, name: 'fixed', sql: (s) => `CREATE TABLE ${s}.half_done (id int)` };
    assert.deepEqual(await migratePostgres(pool, name, [...POSTGRES_MIGRATIONS, fixed]), [version]);
  });

  it('refuses a migration list that is not numbered 1, 2, 3, ...', async () => {
    const { pool, name } = await freshSchema();
    const gap: PostgresMigration = { version: POSTGRES_MIGRATIONS.length + 2, name: 'gap', sql: () => 'SELECT 1' };
    await assert.rejects(migratePostgres(pool, name, [...POSTGRES_MIGRATIONS, gap]), (e: unknown) => isEskitError(e, ErrorCode.Migration));
  });

  it('migrates into an existing empty schema', async () => {
    const schema = await createTestSchema({ create: true });
    cleanups.push(() => schema.drop());
    assert.deepEqual(await migratePostgres(schema.pool, schema.name), latest.map((m) => m.version));
  });
});
