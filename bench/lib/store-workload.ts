// The `store` group's workload, shared by bench/store.ts, bench/store-concurrent.ts and the writer
// processes (bench/fixtures/append-writers.ts): the event every figure appends, and the PostgreSQL
// baseline's table and INSERTs, so that a writer process does exactly what the in-process baseline does.
import type pg from 'pg';
import { v7 as uuidv7 } from 'uuid';
import type { NewEvent } from '../../src/core/event.js';

export const TYPE = 'ItemAdded';
export const DATA = { cartId: 'cart-7f3a', sku: 'sku-12345', quantity: 2, unitPrice: 1999, currency: 'EUR', note: 'gift wrap, leave at the door' };
export const METADATA = { correlationId: '0190b3b4-8a3e-7d7e-9e4b-6f1f2b3c4d5e', causationId: '0190b3b4-8a3e-7d7e-9e4b-6f1f2b3c4d5f' };
export const EVENT: NewEvent = { type: TYPE, data: DATA, metadata: METADATA };

/**
 * `<schema>.raw_events`, made after the store migrated the schema: the same columns, types, constraints
 * and indexes as the store's table; only the position comes from a plain bigserial default instead of
 * the store's serialised append function.
 */
export async function createRawEvents(pool: pg.Pool, schema: string): Promise<void> {
  const s = `"${schema}"`;
  await pool.query(`
    CREATE TABLE ${s}.raw_events (LIKE ${s}.events INCLUDING ALL);
    CREATE SEQUENCE ${s}.raw_events_position OWNED BY ${s}.raw_events.position;
    ALTER TABLE ${s}.raw_events ALTER COLUMN position SET DEFAULT nextval('${s}.raw_events_position');
  `);
}

/**
 * The baseline's 1-row INSERT (autocommit) into `<schema>.raw_events`: returns the query for one event
 * to `streamId`, a named statement parsed once per connection, as the store's are.
 */
export function rawInsertOne(schema: string): (streamId: string) => pg.QueryConfig {
  const statement = {
    name: 'raw_insert_one',
    text: `INSERT INTO "${schema}".raw_events (id, stream_id, stream_version, type, data, metadata, created_at) VALUES ($1, $2, $3, $4, $5, $6, now())`,
  };
  return (streamId) => ({ ...statement, values: [uuidv7(), streamId, 1, TYPE, JSON.stringify(DATA), JSON.stringify(METADATA)] });
}

/**
 * The baseline's batch: `count` events to a new stream `streamId` in one `INSERT .. SELECT FROM unnest`
 * (a named statement), versions 1..count.
 */
export function rawInsertMany(schema: string): (streamId: string, count: number) => pg.QueryConfig {
  const statement = {
    name: 'raw_insert_many',
    text: `INSERT INTO "${schema}".raw_events (id, stream_id, stream_version, type, data, metadata, created_at)
           SELECT u.id, $1, u.i, u.type, u.data, u.metadata, now()
             FROM unnest($2::uuid[], $3::text[], $4::jsonb[], $5::jsonb[]) WITH ORDINALITY AS u(id, type, data, metadata, i)`,
  };
  return (streamId, count) => {
    const ids = new Array<string>(count);
    const types = new Array<string>(count);
    const data = new Array<string>(count);
    const metadata = new Array<string>(count);
    for (let i = 0; i < count; i++) {
      ids[i] = uuidv7();
      types[i] = TYPE;
      data[i] = JSON.stringify(DATA);
      metadata[i] = JSON.stringify(METADATA);
    }
    return { ...statement, values: [streamId, ids, types, data, metadata] };
  };
}
