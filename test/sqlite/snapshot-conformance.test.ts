import type { SqliteSnapshotStore } from '../../src/sqlite/index.js';
import { sqlite } from '../../src/sqlite/index.js';
import { snapshotConformance } from '../../src/testing/snapshot-conformance.js';
import { removeDatabase, tempDatabasePath } from './helpers.js';

snapshotConformance({
  name: 'sqlite',
  create: async () => {
    const path = tempDatabasePath('snapshots');
    const backend = sqlite({ path });
    return {
      store: backend.store,
      snapshots: backend.snapshots,
      close: async () => {
        await backend.close();
        removeDatabase(path);
      },
    };
  },
  corruptSnapshot: async ({ snapshots }, streamId, name) => {
    const { database } = snapshots as SqliteSnapshotStore;
    database.prepare('UPDATE eskit_snapshots SET state = ? WHERE stream_id = ? AND name = ?').run('{"not json', streamId, name);
  },
});
