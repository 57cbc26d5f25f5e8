import { silentLogger } from '../../src/core/logger.js';
import { postgres } from '../../src/postgres/index.js';
import type { PostgresBackend } from '../../src/postgres/index.js';
import { adminConformance } from '../../src/testing/admin-conformance.js';
import { SqlView } from '../../src/view/index.js';
import { createTestSchema } from '../support/postgres.js';

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
    const view = new SqlView({
      backend: host,
      name,
      types: ['CartOpened'],
      logger: silentLogger,
      setup: { version: 1, statements: (t) => [`CREATE TABLE ${t(name)} (id text PRIMARY KEY)`] },
      evolve: async () => undefined,
    });
    await view.start();
    try {
      await view.waitFor(position, { timeoutMs: 10_000 });
    } finally {
      await view.stop();
    }
  },
});
