import type { EventShape } from '../core/event.js';
import type { Logger } from '../core/logger.js';
import type { EventRegistry } from '../core/registry.js';
import type { RebuildOptions, RebuildResult } from '../view/sql-view.js';

/** What the CLI needs of a view: a name and `rebuild`. `SqliteView` and `PostgresView` are such views. */
export interface RebuildableView {
  readonly name: string;
  rebuild(options?: RebuildOptions): Promise<RebuildResult>;
}

/**
 * The backends a config can be handed, by name: `sqlite: { store: SqliteEventStore<E> }` and
 * `postgres: { store: PostgresEventStore<E>; schema: string }`. Empty here on purpose: `eskit/sqlite`
 * and `eskit/postgres` each add their own entry (declaration merging), so that this entry point names
 * neither adapter, and a config file type-checks with the driver types of the adapters it imports only.
 */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type, @typescript-eslint/no-unused-vars -- filled by declaration merging; E is the adapters' event type
export interface EskitConfigBackends<E extends EventShape> {}

/**
 * What `views` receives: the event store the CLI opened from `--db` (created with the config's
 * `registry`, so views see upcast events), for the backend that URL names: `{ backend: 'sqlite',
 * store, logger }` or `{ backend: 'postgres', store, schema, logger }`.
 */
export type EskitConfigContext<E extends EventShape = EventShape> = {
  [B in keyof EskitConfigBackends<E>]: { backend: B; logger: Logger } & EskitConfigBackends<E>[B];
}[keyof EskitConfigBackends<E>];

/**
 * The default export of `eskit.config.js` / `.mjs` / `.ts`: what the `eskit` CLI cannot read from the
 * database, because it is code. `eskit view rebuild` uses it.
 *
 * ```ts
 * // eskit.config.ts
 * import { defineConfig } from 'eskit/cli';
 * import { SqliteView } from 'eskit/sqlite';
 * import { PostgresView } from 'eskit/postgres';
 *
 * export default defineConfig<CartEvent>({
 *   registry,
 *   views: (context) =>
 *     context.backend === 'sqlite'
 *       ? [new SqliteView({ ...cartsSqlite, store: context.store, logger: context.logger })]
 *       : [new PostgresView({ ...cartsPostgres, store: context.store, logger: context.logger })],
 * });
 * ```
 */
export interface EskitConfig<E extends EventShape = EventShape> {
  /** The application's event registry: the CLI's store decodes (upcasts, validates) with it. */
  registry?: EventRegistry<E>;
  /**
   * Builds the application's views on the CLI's store. Called once per command that needs them;
   * the views are only rebuilt, never started. Build them as the service does (same name, setup,
   * types and evolve), or the rebuild produces something else than the service expects.
   */
  views?: (context: EskitConfigContext<E>) => readonly RebuildableView[] | Promise<readonly RebuildableView[]>;
}

/** Returns `config` as it is: only there so that a config file gets its types checked. */
export function defineConfig<E extends EventShape = EventShape>(config: EskitConfig<E>): EskitConfig<E> {
  return config;
}
