import { postgres, PostgresSubjectKeyStore } from '../../src/postgres/index.js';
import type { PostgresEventStore } from '../../src/postgres/index.js';
import type { SubjectKeyStores } from '../../src/testing/index.js';
import { personalDataConformance, subjectKeyConformance } from '../../src/testing/index.js';
import { connectTestPool, createTestSchema, POSTGRES_URL } from '../support/postgres.js';

/** The schema each key store of a test lives in, for `openAnother`. */
const schemas = new WeakMap<SubjectKeyStores, string>();

subjectKeyConformance({
  name: 'postgres, the backend\'s (on the event store\'s pool and schema)',
  create: async () => {
    // Not created: the first call's migration creates the schema.
    const schema = await createTestSchema({ create: false });
    const backend = postgres({ pool: schema.pool, schema: schema.name, leaderElection: false });
    const stores = {
      keys: backend.subjectKeys,
      close: async () => {
        await backend.close();
        await schema.drop();
      },
    };
    schemas.set(stores, schema.name);
    return stores;
  },
  // Another process's: a pool of its own on the same schema.
  openAnother: async (stores) => {
    const keys = new PostgresSubjectKeyStore({ connectionString: POSTGRES_URL, schema: schemas.get(stores) as string });
    return { keys, close: () => keys.close() };
  },
});

subjectKeyConformance({
  name: 'postgres, a key store with its own pool',
  create: async () => {
    const schema = await createTestSchema({ create: false, poolSize: 1 });
    const keys = new PostgresSubjectKeyStore({ connectionString: schema.connectionString, schema: schema.name });
    return {
      keys,
      close: async () => {
        await keys.close();
        await schema.drop();
      },
    };
  },
});

personalDataConformance({
  name: 'postgres',
  create: async (registry) => {
    const schema = await createTestSchema({ create: false });
    const backend = postgres({ pool: schema.pool, schema: schema.name, registry, leaderElection: false });
    return {
      store: backend.store,
      close: async () => {
        await backend.close();
        await schema.drop();
      },
    };
  },
  // Another process's: its own pool, key cache and LISTEN connection.
  openAnother: async (store, registry) => {
    const { schema } = store as unknown as PostgresEventStore;
    const pool = await connectTestPool(2);
    const backend = postgres({ pool, schema, registry, leaderElection: false });
    return {
      store: backend.store,
      close: async () => {
        await backend.close();
        await pool.end();
      },
    };
  },
  tamper: async (store, position, data) => {
    const { pool, schema } = store as unknown as PostgresEventStore;
    await pool.query(`UPDATE "${schema}".events SET data = $1::jsonb WHERE position = $2`, [data, position]);
  },
});
