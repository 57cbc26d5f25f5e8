import { sqlite } from '../../src/sqlite/index.js';
import { adminConformance } from '../../src/testing/admin-conformance.js';
import { removeDatabase, tempDatabasePath } from './helpers.js';
import { adminViewHooks } from '../support/admin-views.js';

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
  ...adminViewHooks,
});
