import { PostgresCheckpointStore, PostgresEventStore } from '../../src/postgres/index.js';
import { checkpointStoreConformance } from '../../src/testing/checkpoint-conformance.js';
import { createTestSchema } from '../support/postgres.js';

checkpointStoreConformance({
  name: 'postgres, sharing an event store (its pool, schema and migration)',
  create: async () => {
    // Not created: the first call's migration creates the schema.
    const schema = await createTestSchema({ create: false });
    const store = new PostgresEventStore({ pool: schema.pool, schema: schema.name });
    return {
      checkpoints: new PostgresCheckpointStore({ store }),
      close: async () => {
        await store.close();
        await schema.drop();
      },
    };
  },
});

checkpointStoreConformance({
  name: 'postgres, with its own pool from a connection string',
  create: async () => {
    const schema = await createTestSchema({ create: false, poolSize: 1 });
    const checkpoints = new PostgresCheckpointStore({ connectionString: schema.connectionString, schema: schema.name });
    return {
      checkpoints,
      close: async () => {
        await checkpoints.close();
        await schema.drop();
      },
    };
  },
});
