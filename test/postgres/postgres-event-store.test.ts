import type { EventShape } from '../../src/core/event.js';
import type { EventStore } from '../../src/core/store.js';
import { PostgresEventStore } from '../../src/postgres/index.js';
import { eventStoreConformance } from '../../src/testing/conformance.js';
import { createTestSchema } from '../support/postgres.js';
import type { TestSchema } from '../support/postgres.js';

// Schemas of the running test, keyed by name; the suite closes its stores before calling dispose.
const schemas = new Map<string, TestSchema>();

function postgres<E extends EventShape>(store: EventStore<E>): PostgresEventStore<E> {
  if (!(store instanceof PostgresEventStore)) throw new Error('the postgres harness was handed a store it did not create');
  return store as PostgresEventStore<E>;
}

function schemaOf(store: EventStore): TestSchema {
  const schema = schemas.get(postgres(store).schema);
  if (!schema) throw new Error(`schema ${postgres(store).schema} is not one of this test's`);
  return schema;
}

eventStoreConformance({
  name: 'postgres',
  async createStore(options) {
    // Not created: the store's lazy migration creates the schema on first use.
    const schema = await createTestSchema({ create: false, poolSize: 2 });
    schemas.set(schema.name, schema);
    // The store makes (and on close ends) its own pool from the connection string.
    return new PostgresEventStore({ ...options, connectionString: schema.connectionString, schema: schema.name });
  },
  async openAnother(store) {
    // A second handle on the same schema, on a pool the store does not own.
    return new PostgresEventStore({ pool: schemaOf(store).pool, schema: postgres(store).schema });
  },
  async corruptEvent(store, position) {
    // jsonb cannot hold invalid JSON, so the corruption is metadata that is not an object.
    const { pool, name } = schemaOf(store);
    const result = await pool.query(`UPDATE "${name}".events SET metadata = '[1, 2]' WHERE position = $1`, [position]);
    if (result.rowCount !== 1) throw new Error(`no event at position ${position} to corrupt`);
  },
  lifecycle: {
    async deletedVersions(store, streamId) {
      const { pool, name } = schemaOf(store);
      const result = await pool.query<{ v: string }>(`SELECT stream_version AS v FROM "${name}".deleted_events WHERE stream_id = $1 ORDER BY stream_version`, [streamId]);
      return result.rows.map((row) => Number(row.v));
    },
    async writeSnapshot(store, streamId, name) {
      const schema = schemaOf(store);
      await schema.pool.query(
        `INSERT INTO "${schema.name}".snapshots (stream_id, name, state_version, stream_version, event_id, state, created_at) VALUES ($1, $2, '1', 1, $3, '{}', now())`,
        [streamId, name, '00000000-0000-7000-8000-000000000000'],
      );
    },
    async snapshotCount(store, streamId) {
      const { pool, name } = schemaOf(store);
      const result = await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM "${name}".snapshots WHERE stream_id = $1`, [streamId]);
      return result.rows[0]?.n ?? 0;
    },
  },
  async dispose() {
    const all = [...schemas.values()];
    schemas.clear();
    await Promise.all(all.map((s) => s.drop()));
  },
});
