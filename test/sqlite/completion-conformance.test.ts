import Database from 'better-sqlite3';
import { SqliteCheckpointStore, SqliteCompletionStore, SqliteEventStore } from '../../src/sqlite/index.js';
import { completionStoreConformance } from '../../src/testing/completion-conformance.js';
import { removeDatabase, tempDatabasePath } from './helpers.js';

completionStoreConformance({
  name: 'sqlite, sharing an event store connection',
  create: async () => {
    const path = tempDatabasePath('completions');
    const store = new SqliteEventStore({ path });
    return {
      completions: new SqliteCompletionStore({ store }),
      checkpoints: new SqliteCheckpointStore({ store }),
      close: async () => {
        await store.close();
        removeDatabase(path);
      },
    };
  },
});

completionStoreConformance({
  name: 'sqlite, the completions and the checkpoints on their own connections to one file',
  create: async () => {
    const path = tempDatabasePath('completions');
    const completions = new SqliteCompletionStore({ path });
    const checkpointConnection = new Database(path);
    return {
      completions,
      checkpoints: new SqliteCheckpointStore({ database: checkpointConnection }),
      close: async () => {
        await completions.close();
        checkpointConnection.close();
        removeDatabase(path);
      },
    };
  },
});
