import Database from 'better-sqlite3';
import { SqliteCheckpointStore, SqliteEventStore } from '../../src/sqlite/index.js';
import { checkpointStoreConformance } from '../../src/testing/checkpoint-conformance.js';
import { removeDatabase, tempDatabasePath } from './helpers.js';

checkpointStoreConformance({
  name: 'sqlite, sharing an event store connection',
  create: async () => {
    const path = tempDatabasePath('checkpoints');
    const store = new SqliteEventStore({ path });
    return {
      checkpoints: new SqliteCheckpointStore({ store }),
      close: async () => {
        await store.close();
        removeDatabase(path);
      },
    };
  },
});

checkpointStoreConformance({
  name: 'sqlite, on a handle you own that returns BigInts by default',
  create: async () => {
    const path = tempDatabasePath('checkpoints');
    const database = new Database(path);
    database.defaultSafeIntegers(true);
    return {
      checkpoints: new SqliteCheckpointStore({ database }),
      close: async () => {
        database.close();
        removeDatabase(path);
      },
    };
  },
});
