import { memory } from '../../src/memory/index.js';
import { adminConformance } from '../../src/testing/admin-conformance.js';

adminConformance({
  name: 'memory',
  // This process is the database: its clock is the one that stamps the rows.
  databaseClock: false,
  create: async () => {
    const backend = memory({ leaderElection: true });
    return { backend, admin: backend.admin, close: () => backend.close() };
  },
});
