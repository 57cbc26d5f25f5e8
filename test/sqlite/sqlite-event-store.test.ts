import type { EventShape } from '../../src/core/event.js';
import type { EventStore } from '../../src/core/store.js';
import { SqliteEventStore } from '../../src/sqlite/index.js';
import { eventStoreConformance } from '../../src/testing/conformance.js';
import { removeDatabase, tempDatabasePath } from './helpers.js';

// Files of the running test; the suite closes its stores before calling dispose.
let files: string[] = [];

function sqlite<E extends EventShape>(store: EventStore<E>): SqliteEventStore<E> {
  if (!(store instanceof SqliteEventStore)) throw new Error('the sqlite harness was handed a store it did not create');
  return store as SqliteEventStore<E>;
}

eventStoreConformance({
  name: 'sqlite',
  async createStore(options) {
    const path = tempDatabasePath('conformance');
    files.push(path);
    return new SqliteEventStore({ ...options, path });
  },
  async openAnother(store) {
    return new SqliteEventStore({ path: sqlite(store).database.name });
  },
  async corruptEvent(store, position) {
    const changed = sqlite(store).database.prepare("UPDATE eskit_events SET data = '{not json' WHERE position = ?").run(position).changes;
    if (changed !== 1) throw new Error(`no event at position ${position} to corrupt`);
  },
  lifecycle: {
    async deletedVersions(store, streamId) {
      const rows = sqlite(store).database.prepare('SELECT stream_version FROM eskit_deleted_events WHERE stream_id = ? ORDER BY stream_version').pluck().all(streamId);
      return rows as number[];
    },
    async writeSnapshot(store, streamId, name) {
      sqlite(store)
        .database.prepare("INSERT INTO eskit_snapshots (stream_id, name, state_version, stream_version, event_id, state, created_at) VALUES (?, ?, '1', 1, ?, '{}', 0)")
        .run(streamId, name, '00000000-0000-7000-8000-000000000000');
    },
    async snapshotCount(store, streamId) {
      return sqlite(store).database.prepare('SELECT count(*) FROM eskit_snapshots WHERE stream_id = ?').pluck().get(streamId) as number;
    },
  },
  async dispose() {
    for (const path of files) removeDatabase(path);
    files = [];
  },
});
