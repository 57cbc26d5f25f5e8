import assert from 'node:assert/strict';
import { silentLogger } from '../../src/core/logger.js';
import { PostgresLockRegistry } from '../../src/postgres/index.js';
import { lockRegistryConformance } from '../../src/testing/index.js';
import { createTestSchema, POSTGRES_URL } from '../support/postgres.js';

lockRegistryConformance<PostgresLockRegistry>({
  name: 'postgres',
  create: async () => {
    // A schema of the test's own, created by the first registry's migration and dropped after it.
    const schema = await createTestSchema({ create: false, poolSize: 2 });
    return {
      // A 20 ms poll keeps handovers that no NOTIFY announces (a killed session) short.
      registry: () => new PostgresLockRegistry({ connectionString: POSTGRES_URL, schema: schema.name, pollIntervalMs: 20, sessionTimeoutMs: 2_000, logger: silentLogger }),
      loseLease: async (registry) => {
        const pid = registry.connectionPid;
        assert.ok(pid !== undefined, 'the registry holding a lease has a lock connection');
        await schema.pool.query('SELECT pg_terminate_backend($1)', [pid]);
      },
      close: () => schema.drop(),
    };
  },
});
