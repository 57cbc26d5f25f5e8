import { postgres, PostgresEventStore, PostgresSnapshotStore } from '../../src/postgres/index.js';
import { snapshotConformance } from '../../src/testing/snapshot-conformance.js';
import { createTestSchema } from '../support/postgres.js';

// The json column holds only valid JSON: there is no row to corrupt, so that test is not run here.
snapshotConformance({
  name: 'postgres, the backend\'s (sharing the event store\'s pool and schema)',
  create: async () => {
    // Not created: the first call's migration creates the schema.
    const schema = await createTestSchema({ create: false });
    const backend = postgres({ pool: schema.pool, schema: schema.name, leaderElection: false });
    return {
      store: backend.store,
      snapshots: backend.snapshots,
      close: async () => {
        await backend.close();
        await schema.drop();
      },
    };
  },
});

snapshotConformance({
  name: 'postgres, a snapshot store with its own pool from a connection string',
  create: async () => {
    const schema = await createTestSchema({ create: false, poolSize: 2 });
    const store = new PostgresEventStore({ pool: schema.pool, schema: schema.name });
    await store.migrate();
    const snapshots = new PostgresSnapshotStore({ connectionString: schema.connectionString, schema: schema.name });
    return {
      store,
      snapshots,
      close: async () => {
        await snapshots.close();
        await store.close();
        await schema.drop();
      },
    };
  },
});
