import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { openBackend, UsageError } from '../../examples/ticket-shop/backend.js';
import { silentLogger } from '../../src/core/logger.js';
import { createTestSchema, POSTGRES_URL } from '../support/postgres.js';
import type { TestSchema } from '../support/postgres.js';
import { runDemo } from './run-demo.js';

let cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  const pending = cleanups.reverse();
  cleanups = [];
  for (const cleanup of pending) await cleanup();
});

async function tablesOf(schema: TestSchema): Promise<string[]> {
  const result = await schema.pool.query<{ relname: string }>(
    `SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY c.relname`,
    [schema.name],
  );
  return result.rows.map((row) => row.relname);
}

async function schemaExists(schema: TestSchema): Promise<boolean> {
  const result = await schema.pool.query('SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1', [schema.name]);
  return result.rowCount === 1;
}

const config = (schema: TestSchema) => ({ kind: 'postgres' as const, url: POSTGRES_URL, schema: schema.name });

describe("the demo's PostgreSQL schema", () => {
  it('is dropped by the next run only when the demo created it', async () => {
    const schema = await createTestSchema({ create: false, prefix: 'eskit_demo_t' });
    cleanups.push(() => schema.drop());
    const first = await openBackend(config(schema), { reset: true, logger: silentLogger });
    await schema.pool.query(`CREATE TABLE "${schema.name}".left_by_the_first_run (x int)`);
    await first.close();

    const second = await openBackend(config(schema), { reset: true, logger: silentLogger });
    try {
      assert.ok(!(await tablesOf(schema)).includes('left_by_the_first_run'), 'a reset run starts from an empty schema');
    } finally {
      await second.close();
    }
  });

  it('a schema the demo did not create is left alone, with a message that says what to do', async () => {
    const schema = await createTestSchema({ prefix: 'eskit_demo_t' });
    cleanups.push(() => schema.drop());
    await schema.pool.query(`CREATE TABLE "${schema.name}".precious (x int)`);
    await assert.rejects(openBackend(config(schema), { reset: true, logger: silentLogger }), (error: unknown) => {
      assert.ok(error instanceof UsageError, String(error));
      assert.match(error.message, new RegExp(`"${schema.name}" .*not created by the demo`));
      assert.match(error.message, /ESKIT_DEMO_SCHEMA/);
      assert.match(error.message, /DROP SCHEMA/);
      return true;
    });
    assert.deepEqual(await tablesOf(schema), ['precious']);
  });

  it('`npm start` refuses such a schema with exit code 2 and drops nothing', async () => {
    const schema = await createTestSchema({ prefix: 'eskit_demo_t' });
    cleanups.push(() => schema.drop());
    await schema.pool.query(`CREATE TABLE "${schema.name}".precious (x int)`);
    const run = await runDemo([], { DATABASE_URL: POSTGRES_URL, ESKIT_DEMO_SCHEMA: schema.name });
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /not created by the demo/);
    assert.ok(await schemaExists(schema));
    assert.deepEqual(await tablesOf(schema), ['precious']);
  });
});
