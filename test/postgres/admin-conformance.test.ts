import { silentLogger } from '../../src/core/logger.js';
import { postgres } from '../../src/postgres/index.js';
import type { PostgresBackend } from '../../src/postgres/index.js';
import { adminConformance } from '../../src/testing/admin-conformance.js';
import { SqlView } from '../../src/view/index.js';
import { createTestSchema } from '../support/postgres.js';

// The view the view tests make: one table, fed by CartOpened.
const cartsSpec = (name: string) => ({
  name,
  types: ['CartOpened'],
  setup: { version: 1, statements: (t: (table: string) => string) => [`CREATE TABLE ${t(name)} (id text PRIMARY KEY)`] },
  evolve: async () => undefined,
});

adminConformance({
  name: 'postgres',
  databaseClock: true,
  create: async () => {
    // Each test in a schema of its own, created by the backend's migration.
    const schema = await createTestSchema({ create: false, prefix: 'eskit_admin', poolSize: 1 });
    const backend = postgres({ connectionString: schema.connectionString, schema: schema.name, logger: silentLogger });
    await backend.migrate();
    return {
      backend,
      admin: backend.admin,
      close: async () => {
        await backend.close();
        await schema.drop();
      },
    };
  },
  // A view that ran once (leading with the backend's lock, then released): its row in the versions
  // table is what the admin lists.
  createView: async ({ backend }, name) => {
    const host = backend as PostgresBackend;
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
    const host = backend as PostgresBackend;
    const views = host.views.create(cartsSpec(name));
    const { generation } = await views.beginRebuild('a rebuild that died');
    const events = [];
    for await (const event of host.store.readAll({ types: ['CartOpened'] })) events.push(event);
    await views.applyShadow(events, 'a rebuild that died', generation);
    return events[events.length - 1]?.position ?? 0;
  },
});
