import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import { silentLogger } from '../../src/core/logger.js';
import {
  PostgresLockRegistry,
  PostgresCheckpointStore,
  PostgresCompletionStore,
  PostgresDeadLetterStore,
  PostgresEventStore,
} from '../../src/postgres/index.js';
import { quoteSchema } from '../../src/postgres/schema.js';
import { createTestSchema, POSTGRES_URL } from '../support/postgres.js';
import type { TestSchema } from '../support/postgres.js';

let cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  const pending = cleanups.reverse();
  cleanups = [];
  for (const cleanup of pending) await cleanup();
});

// Only constructors are called with these names: should one be accepted, nothing is written to the
// shared database (an accepted schema is migrated on the first call, which this test never makes).
const RESERVED = ['information_schema', 'pg_catalog', 'pg_temp', 'pg_toast', 'pg_anything', 'public'];

function refused(schema: string) {
  return (error: unknown): boolean => {
    assert.ok(isEskitError(error, ErrorCode.InvalidArgument), `expected ESKIT_INVALID_ARGUMENT for "${schema}", got ${String(error)}`);
    assert.match((error as Error).message, new RegExp(`"${schema}"`));
    assert.match((error as Error).message, /schema of its own/);
    return true;
  };
}

describe('PostgreSQL schema names', () => {
  it('refuses the schemas PostgreSQL reserves (information_schema, pg_*) and public, in every store', async () => {
    const schema: TestSchema = await createTestSchema({ create: false });
    cleanups.push(() => schema.drop());
    const { pool } = schema;
    for (const name of RESERVED) {
      assert.throws(() => quoteSchema(name), refused(name));
      assert.throws(() => new PostgresEventStore({ pool, schema: name, logger: silentLogger }), refused(name));
      assert.throws(() => new PostgresCheckpointStore({ pool, schema: name }), refused(name));
      assert.throws(() => new PostgresDeadLetterStore({ pool, schema: name }), refused(name));
      assert.throws(() => new PostgresCompletionStore({ pool, schema: name }), refused(name));
      assert.throws(() => new PostgresLockRegistry({ connectionString: POSTGRES_URL, schema: name, logger: silentLogger }), refused(name));
    }
  });

  it('still takes ordinary names, including ones that merely contain a reserved word', async () => {
    for (const name of ['eskit', 'public_events', 'my_pg_schema', 'information', 'pg', 'pgx_events', '_pg_x']) {
      assert.equal(quoteSchema(name), `"${name}"`);
    }
  });
});
