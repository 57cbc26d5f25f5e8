import type { EventShape } from '../core/event.js';
import type { Logger } from '../core/logger.js';
import type { EskitConfig, EskitConfigContext, RebuildableView } from './config.js';
import type { AdapterStore, CliDatabase } from './database.js';
import { CliError } from './errors.js';
import { OPERATIONS_GUIDE } from './docs.js';

function checkViews(views: unknown, path: string): RebuildableView[] {
  if (!Array.isArray(views) || views.some((view) => typeof (view as RebuildableView | null)?.name !== 'string' || typeof (view as RebuildableView).rebuild !== 'function')) {
    throw new CliError(`views() in the config ${path} must return an array of views (SqlView)`, { hint: `See ${OPERATIONS_GUIDE}.` });
  }
  return views as RebuildableView[];
}

/**
 * The context a config's views are built on: the CLI's store and the SQL views of its database. The
 * adapter is loaded here, through its entry, only for the database the CLI opened.
 */
async function viewContext(adapter: AdapterStore<EventShape>, logger: Logger): Promise<EskitConfigContext> {
  if (adapter.backend === 'sqlite') {
    const { SqliteViews } = await import('../sqlite/index.js');
    return { ...adapter, views: new SqliteViews({ store: adapter.store }), logger } as EskitConfigContext;
  }
  const { PostgresViews } = await import('../postgres/index.js');
  return { ...adapter, views: new PostgresViews({ store: adapter.store }), logger } as EskitConfigContext;
}

/**
 * The views a loaded config builds on `db` (opened with the config's registry): what `view rebuild`
 * and `dashboard` rebuild. An empty list when the config defines none.
 */
export async function loadConfigViews(loaded: { path: string; config: EskitConfig }, db: CliDatabase, logger: Logger): Promise<RebuildableView[]> {
  const { path, config } = loaded;
  if (config.views === undefined) return [];
  const context = await viewContext(db.adapter, logger);
  try {
    return checkViews(await config.views(context), path);
  } catch (error) {
    if (error instanceof CliError) throw error;
    throw new CliError(`views() in the config ${path} threw: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
}
