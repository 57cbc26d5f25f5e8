// Partitioned SQL views on SQLite (one process, no leader election: every partition runs here).
import { sqlite } from '../../src/sqlite/index.js';
import { removeDatabase, tempDatabasePath } from '../sqlite/helpers.js';
import type { SaleEvent } from './view-fixture.js';
import { partitionedViewSuite } from './view-suite.js';

partitionedViewSuite('sqlite', async (cleanup) => {
  const path = tempDatabasePath('partitioned-view');
  const backend = sqlite<SaleEvent>({ path });
  cleanup(() => removeDatabase(path));
  cleanup(() => backend.close());
  return {
    host: backend,
    query: async (sql) => backend.database.prepare(sql).all() as Array<Record<string, unknown>>,
    checkpoints: () => backend.checkpoints.list(),
  };
});
