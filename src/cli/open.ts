import type { CliDatabase, OpenOptions } from './database.js';
import type { DatabaseTarget } from './target.js';

/**
 * Opens the database the target names, loading only the adapter it needs: a SQLite-only install has
 * no `pg`, and a PostgreSQL-only one no `better-sqlite3`.
 */
export async function openDatabase(target: DatabaseTarget, options: OpenOptions): Promise<CliDatabase> {
  if (target.kind === 'sqlite') {
    const { openSqlite } = await import('./open-sqlite.js');
    return openSqlite(target, options);
  }
  const { openPostgres } = await import('./open-postgres.js');
  return openPostgres(target, options);
}
