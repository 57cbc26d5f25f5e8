import { silentLogger } from '../../src/core/logger.js';
import { SqliteLockRegistry } from '../../src/sqlite/index.js';
import { lockRegistryConformance } from '../../src/testing/index.js';
import { removeDatabase, tempDatabasePath } from './helpers.js';

lockRegistryConformance<SqliteLockRegistry>({
  name: 'sqlite',
  create: async () => {
    const path = tempDatabasePath('locks-conformance');
    return {
      // Polls once a minute: every handover in the suite must come from the in-process wake-up a
      // release sends, so a lost wake-up fails a test instead of hiding behind a poll.
      registry: () => new SqliteLockRegistry({ path, logger: silentLogger, ttlMs: 1_000, renewIntervalMs: 50, pollIntervalMs: 60_000 }),
      // Expires the row by the database's clock, as a holder that stopped renewing would find it.
      loseLease: async (registry, lease) => {
        registry.database
          .prepare("UPDATE eskit_leases SET expires_at = CAST(unixepoch('subsec') * 1000 AS INTEGER) - 1 WHERE name = ? AND fencing_token = ?")
          .run(lease.name, lease.fencingToken);
      },
      close: async () => removeDatabase(path),
    };
  },
});
