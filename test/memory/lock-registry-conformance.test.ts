import { MemoryLockRegistry } from '../../src/memory/index.js';
import { lockRegistryConformance } from '../../src/testing/index.js';

lockRegistryConformance<MemoryLockRegistry>({
  name: 'memory',
  sharedInstance: true,
  create: async () => {
    // Every node of a process shares one MemoryLockRegistry: it is the backend.
    const shared = new MemoryLockRegistry();
    return {
      registry: () => shared,
      loseLease: async (registry, lease) => registry.revoke(lease.name),
      close: async () => undefined,
    };
  },
});
