import { silentLogger } from '../../src/core/logger.js';
import { sqlite } from '../../src/sqlite/index.js';
import type { SqliteBackend } from '../../src/sqlite/index.js';
import { adminConformance } from '../../src/testing/admin-conformance.js';
import { SqlView } from '../../src/view/index.js';
import { removeDatabase, tempDatabasePath } from './helpers.js';

// The view the view tests make: one table, fed by CartOpened.
const cartsSpec = (name: string) => ({
  name,
  types: ['CartOpened'],
  setup: { version: 1, statements: (t: (table: string) => string) => [`CREATE TABLE ${t(name)} (id TEXT PRIMARY KEY)`] },
  evolve: () => undefined,
});

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
    const view = new SqlView({ ...cartsSpec(name), backend: host, logger: silentLogger });
    await view.start();
    try {
      await view.waitFor(position, { timeoutMs: 10_000 });
    } finally {
      await view.stop();
    }
  },
  // What a rebuild of that view whose process died after one batch leaves: its shadow tables and their checkpoint.
  deadRebuild: async ({ backend }, name) => {
    const host = backend as SqliteBackend;
    const views = host.views.create(cartsSpec(name));
    const { generation } = await views.beginRebuild('a rebuild that died');
    const events = [];
    for await (const event of host.store.readAll({ types: ['CartOpened'] })) events.push(event);
    await views.applyShadow(events, 'a rebuild that died', generation);
    return events[events.length - 1]?.position ?? 0;
  },
});
