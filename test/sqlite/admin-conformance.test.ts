import { silentLogger } from '../../src/core/logger.js';
import { sqlite } from '../../src/sqlite/index.js';
import type { SqliteBackend } from '../../src/sqlite/index.js';
import { adminConformance } from '../../src/testing/admin-conformance.js';
import { SqlView } from '../../src/view/index.js';
import { removeDatabase, tempDatabasePath } from './helpers.js';

adminConformance({
  name: 'sqlite',
  databaseClock: true,
  create: async () => {
    const path = tempDatabasePath('admin');
    const backend = sqlite({ path, leaderElection: { ttlMs: 3000 } });
    return {
      backend,
      admin: backend.admin,
      close: async () => {
        await backend.close();
        removeDatabase(path);
      },
    };
  },
  // A view that ran once: its row in the versions table is what the admin lists.
  createView: async ({ backend }, name) => {
    const host = backend as SqliteBackend;
    const { position } = await host.store.append('cart-1', [{ type: 'CartOpened', data: {} }]);
    const view = new SqlView({
      backend: host,
      name,
      types: ['CartOpened'],
      logger: silentLogger,
      setup: { version: 1, statements: (t) => [`CREATE TABLE ${t(name)} (id TEXT PRIMARY KEY)`] },
      evolve: () => undefined,
    });
    await view.start();
    try {
      await view.waitFor(position, { timeoutMs: 10_000 });
    } finally {
      await view.stop();
    }
  },
});
