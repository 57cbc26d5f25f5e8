import { MemoryCheckpointStore, MemoryCompletionStore } from '../../src/memory/index.js';
import { completionStoreConformance } from '../../src/testing/completion-conformance.js';

completionStoreConformance({
  name: 'memory',
  create: async () => {
    const checkpoints = new MemoryCheckpointStore();
    return { completions: new MemoryCompletionStore({ checkpoints }), checkpoints, close: async () => {} };
  },
});
