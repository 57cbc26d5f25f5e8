import { silentLogger } from '../../src/core/logger.js';
import { postgres } from '../../src/postgres/index.js';
import { adminConformance } from '../../src/testing/admin-conformance.js';
import { createTestSchema } from '../support/postgres.js';
import { adminViewHooks } from '../support/admin-views.js';

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
  ...adminViewHooks,
});
