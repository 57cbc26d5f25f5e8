import type { EventShape } from '../core/event.js';
import type { Logger } from '../core/logger.js';
import type { EventRegistry } from '../core/registry.js';
import type { RebuildOptions, RebuildResult } from '../view/sql-view.js';

/** What the CLI needs of a view: a name and `rebuild`. A `SqlView` is such a view. */
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
 * The SQL views each backend of `EskitConfigBackends` offers a config (`SqliteViews`, `PostgresViews`),
 * by the same names and filled the same way, by `eskit/sqlite` and `eskit/postgres`.
 */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type, @typescript-eslint/no-unused-vars -- filled by declaration merging; E is the adapters' event type
export interface EskitConfigViews<E extends EventShape> {}

/**
 * What `views` receives: the event store the CLI opened from `--db` (created with the config's
 * `registry`, so views see upcast events) and its SQL views, for the backend that URL names:
 * `{ backend: 'sqlite', store, views, logger }` or `{ backend: 'postgres', store, schema, views, logger }`.
 * It is what a `SqlView` runs on: `new SqlView({ backend: context, ... })`.
 */
export type EskitConfigContext<E extends EventShape = EventShape> = {
  [B in keyof EskitConfigBackends<E>]: { backend: B; logger: Logger } & EskitConfigBackends<E>[B] &
    (B extends keyof EskitConfigViews<E> ? { views: EskitConfigViews<E>[B] } : unknown);
}[keyof EskitConfigBackends<E>];

/**
 * The default export of `eskit.config.js` / `.mjs` / `.ts`: what the `eskit` CLI cannot read from the
 * database, because it is code. `eskit view rebuild` uses it.
 *
 * ```ts
 * // eskit.config.ts
 * import { SqlView } from 'eskit';
 * import { defineConfig } from 'eskit/cli';
 * import type {} from 'eskit/postgres'; // the context's type for PostgreSQL (the app's view module may import it already)
 * import { carts, registry } from './src/views.js'; // { name, types, setup, evolve }, as the service builds it
 *
 * export default defineConfig<CartEvent>({
 *   registry,
 *   views: (context) => [new SqlView({ ...carts, backend: context, logger: context.logger })],
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
