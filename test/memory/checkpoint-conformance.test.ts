import { MemoryCheckpointStore } from '../../src/memory/index.js';
import { checkpointStoreConformance } from '../../src/testing/checkpoint-conformance.js';

checkpointStoreConformance({
  name: 'memory',
  create: async () => ({ checkpoints: new MemoryCheckpointStore(), close: async () => {} }),
});
