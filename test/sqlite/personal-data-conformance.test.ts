import { openSqlite, sqlite, SqliteSubjectKeyStore } from '../../src/sqlite/index.js';
import type { SqliteEventStore } from '../../src/sqlite/index.js';
import type { SubjectKeyStores } from '../../src/testing/index.js';
import { personalDataConformance, subjectKeyConformance } from '../../src/testing/index.js';
import { removeDatabase, tempDatabasePath } from './helpers.js';

/** The file each key store of a test lives in, for `openAnother`. */
const files = new WeakMap<SubjectKeyStores, string>();

subjectKeyConformance({
  name: 'sqlite, the backend\'s (on the event store\'s connection)',
  create: async () => {
    const path = tempDatabasePath('subject-keys');
    const backend = sqlite({ path });
    const stores = {
      keys: backend.subjectKeys,
      close: async () => {
        await backend.close();
        removeDatabase(path);
      },
    };
    files.set(stores, path);
    return stores;
  },
  // Another process's: a connection of its own on the same file.
  openAnother: async (stores) => {
    const database = openSqlite(files.get(stores) as string);
    return { keys: new SqliteSubjectKeyStore({ database }), close: async () => void database.close() };
  },
});

personalDataConformance({
  name: 'sqlite',
  create: async (registry) => {
    const path = tempDatabasePath('personal-data');
    const backend = sqlite({ path, registry });
    return {
      store: backend.store,
      close: async () => {
        await backend.close();
        removeDatabase(path);
      },
    };
  },
  openAnother: async (store, registry) => {
    const backend = sqlite({ path: (store as unknown as SqliteEventStore).database.name, registry });
    return { store: backend.store, close: () => backend.close() };
  },
  tamper: async (store, position, data) => {
    (store as unknown as SqliteEventStore).database.prepare('UPDATE eskit_events SET data = ? WHERE position = ?').run(data, position);
  },
});
