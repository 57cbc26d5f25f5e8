// openDashboard: the dashboard for a program (the demo), on a database named by URL, as
// `eskit dashboard --db <url>` opens it; the database is closed with the dashboard.
import { loadConfig } from '../config-loader.js';
import { loadConfigViews } from '../config-views.js';
import { openDatabase } from '../open.js';
import { parseTarget } from '../target.js';
import { silentLogger } from '../../core/logger.js';
import type { Logger } from '../../core/logger.js';
import { startDashboard } from './index.js';
import type { DashboardSettings, RunningDashboard } from './options.js';

export interface OpenDashboardOptions extends DashboardSettings {
  /** The database: `sqlite:<file>` (or a file path) or `postgres://user:password@host:5432/db`. */
  db: string;
  /** PostgreSQL: the schema of eskit's tables (default 'eskit'). */
  schema?: string;
  /** A config module (as `--config`) whose views the dashboard may rebuild, and whose registry decodes. */
  config?: string;
  /** Where relative paths start (default process.cwd()). */
  cwd?: string;
  /** Default: silent. */
  logger?: Logger;
}

/**
 * Opens the database (it must be migrated) and starts a dashboard on it: read-only unless
 * `allowActions`, on 127.0.0.1:4300 unless told otherwise. `close()` stops the dashboard, then
 * closes the database.
 */
export async function openDashboard(options: OpenDashboardOptions): Promise<RunningDashboard> {
  const { db: url, schema, config: configFile, cwd = process.cwd(), logger = silentLogger, ...rest } = options;
  const target = parseTarget(url, schema, cwd);
  const loaded = configFile === undefined ? undefined : await loadConfig(configFile, cwd);
  const database = await openDatabase(target, { requireMigrated: true, registry: loaded?.config.registry, logger });
  try {
    const views = loaded === undefined ? [] : await loadConfigViews(loaded, database, logger);
    const running = await startDashboard({ ...rest, database, views, logger });
    let closing: Promise<void> | undefined;
    return {
      ...running,
      close() {
        closing ??= running.close().finally(() => database.close());
        return closing;
      },
    };
  } catch (error) {
    await database.close().catch(() => undefined);
    throw error;
  }
}
