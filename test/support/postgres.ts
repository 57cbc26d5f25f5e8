import { randomBytes } from 'node:crypto';
import pg from 'pg';

/** Where the tests find PostgreSQL. Override with ESKIT_TEST_PG_URL. */
export const POSTGRES_URL = process.env.ESKIT_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

export interface TestSchema {
  /** A unique, lower-case schema name, e.g. eskit_t_4f2a9c01d3. */
  name: string;
  connectionString: string;
  /** A small pool on the test database; ended by `drop()`. */
  pool: pg.Pool;
  /** Drops the schema (CASCADE) and ends the pool. Safe to call twice. */
  drop(): Promise<void>;
}

/** A new pool on the test database. Fails (never skips) with a clear message if PostgreSQL is unreachable. */
export async function connectTestPool(max = 4): Promise<pg.Pool> {
  const pool = new pg.Pool({ connectionString: POSTGRES_URL, max, connectionTimeoutMillis: 5000 });
  pool.on('error', () => undefined);
  try {
    await pool.query('SELECT 1');
  } catch (cause) {
    await pool.end().catch(() => undefined);
    throw new Error(
      `PostgreSQL is not reachable at ${POSTGRES_URL} (${cause instanceof Error ? cause.message : String(cause)}). ` +
        'These tests need it: start PostgreSQL or point ESKIT_TEST_PG_URL at one.',
      { cause },
    );
  }
  return pool;
}

/** A unique schema name; nothing is created. */
export function uniqueSchemaName(prefix = 'eskit_t'): string {
  return `${prefix}_${randomBytes(5).toString('hex')}`;
}

/**
 * Reserves a unique schema for one test and returns a pool on the test database. With `create` (the
 * default) the schema is created empty; without it only the name is reserved, so a store's migration
 * creates it. Call `drop()` when the test ends.
 */
export async function createTestSchema(options: { create?: boolean; prefix?: string; poolSize?: number } = {}): Promise<TestSchema> {
  const pool = await connectTestPool(options.poolSize ?? 4);
  const name = uniqueSchemaName(options.prefix);
  if (options.create ?? true) await pool.query(`CREATE SCHEMA "${name}"`);
  let dropped = false;
  return {
    name,
    connectionString: POSTGRES_URL,
    pool,
    async drop() {
      if (dropped) return;
      dropped = true;
      try {
        await pool.query(`DROP SCHEMA IF EXISTS "${name}" CASCADE`);
      } finally {
        await pool.end();
      }
    },
  };
}
