import type { MemorySnapshotStore } from '../../src/memory/index.js';
import { memory } from '../../src/memory/index.js';
import { snapshotConformance } from '../../src/testing/snapshot-conformance.js';

snapshotConformance({
  name: 'memory',
  create: async () => {
    const backend = memory();
    return { store: backend.store, snapshots: backend.snapshots, close: () => backend.close() };
  },
  corruptSnapshot: async ({ snapshots }, streamId, name) => {
    (snapshots as MemorySnapshotStore).corruptForTesting(streamId, name, '{"not json');
  },
});
