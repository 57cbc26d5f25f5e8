import { PostgresCheckpointStore, PostgresCompletionStore, PostgresEventStore } from '../../src/postgres/index.js';
import { completionStoreConformance } from '../../src/testing/completion-conformance.js';
import { createTestSchema } from '../support/postgres.js';

completionStoreConformance({
  name: 'postgres, sharing an event store (its pool, schema and migration)',
  create: async () => {
    // Not created: the first call's migration creates the schema.
    const schema = await createTestSchema({ create: false });
    const store = new PostgresEventStore({ pool: schema.pool, schema: schema.name });
    return {
      completions: new PostgresCompletionStore({ store }),
      checkpoints: new PostgresCheckpointStore({ store }),
      close: async () => {
        await store.close();
        await schema.drop();
      },
    };
  },
});

completionStoreConformance({
  name: 'postgres, each store with its own pool from a connection string',
  create: async () => {
    const schema = await createTestSchema({ create: false, poolSize: 1 });
    const completions = new PostgresCompletionStore({ connectionString: schema.connectionString, schema: schema.name });
    const checkpoints = new PostgresCheckpointStore({ connectionString: schema.connectionString, schema: schema.name });
    return {
      completions,
      checkpoints,
      close: async () => {
        await completions.close();
        await checkpoints.close();
        await schema.drop();
      },
    };
  },
});
