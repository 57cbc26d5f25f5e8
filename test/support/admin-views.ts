// The views the admin conformance tests make on a SQL backend (sqlite() or postgres()): one table fed
// by CartOpened; a view that ran once, and what a rebuild of it whose process died leaves.
import { silentLogger } from '../../src/core/logger.js';
import type { EventShape } from '../../src/core/event.js';
import type { SqlViewHost } from '../../src/view/index.js';
import { SqlView } from '../../src/view/index.js';
import type { Upsert } from '../../src/core/view-rows.js';
import type { AdminBackend } from '../../src/testing/admin-conformance.js';

const cartsSpec = (name: string) => ({
  name,
  types: ['CartOpened'],
  setup: { version: 1, statements: (t: (table: string) => string) => [`CREATE TABLE ${t(name)} (id text PRIMARY KEY)`] },
  // Synchronous: SQLite's evolve must be. A row per cart, for the admin's row counts.
  evolve: (event: { streamId: string }, tx: { upsert: Upsert }) => tx.upsert(name, { id: event.streamId }, { key: ['id'] }),
});

export const adminViewHooks = {
  // A view that ran once (leading with the backend's lock, if any, then released): its row in the
  // versions table is what the admin lists.
  createView: async ({ backend }: AdminBackend, name: string): Promise<void> => {
    const host = backend as unknown as SqlViewHost<EventShape>;
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
  deadRebuild: async ({ backend }: AdminBackend, name: string): Promise<number> => {
    const host = backend as unknown as SqlViewHost<EventShape>;
    const views = host.views.create(cartsSpec(name));
    const { generation } = await views.beginRebuild('a rebuild that died');
    const events = [];
    for await (const event of host.store.readAll({ types: ['CartOpened'] })) events.push(event);
    await views.applyShadow(events, 'a rebuild that died', generation);
    return events[events.length - 1]?.position ?? 0;
  },
};
