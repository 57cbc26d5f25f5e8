import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import type { SchemaState } from '../core/admin.js';
import type { EventShape } from '../core/event.js';
import { sqlite } from '../sqlite/index.js';
import type { SqliteBackend } from '../sqlite/index.js';
import type { CliDatabase, OpenOptions } from './database.js';
import { CliError, messageOf } from './errors.js';
import type { DatabaseTarget } from './target.js';

type SqliteTarget = Extract<DatabaseTarget, { kind: 'sqlite' }>;

/** SQLite's answers for a file that is there but is no database (or a damaged one). */
const NOT_A_DATABASE = new Set(['SQLITE_NOTADB', 'SQLITE_CORRUPT']);

/**
 * Opens an eskit SQLite file through the adapter's backend (no leader election, nothing migrated).
 * Never creates one unless `create` (migrate): a typo must not make a new, empty database.
 */
export async function openSqlite(target: SqliteTarget, options: OpenOptions): Promise<CliDatabase> {
  const { path } = target;
  if (!existsSync(path)) {
    if (!options.create) {
      throw new CliError(`no SQLite database at ${path}`, { hint: `Check --db; \`eskit migrate --db ${target.display}\` creates a new one.` });
    }
    if (!existsSync(dirname(path))) {
      throw new CliError(`the directory ${dirname(path)} does not exist`, { hint: 'Create it first, or fix the path in --db.' });
    }
  }
  let backend: SqliteBackend<EventShape>;
  try {
    backend = sqlite<EventShape>({ path, migrate: false, registry: options.registry });
  } catch (error) {
    throw openFailure(error, target);
  }
  let schema: SchemaState;
  try {
    try {
      schema = await backend.admin.schema();
    } catch (error) {
      throw openFailure(error, target);
    }
    if (options.requireMigrated && schema.version < schema.latest) {
      const what =
        schema.version === 0
          ? `${path} has no eskit tables (it was never migrated)`
          : `${path} is at schema version ${schema.version}, this eskit needs ${schema.latest}`;
      throw new CliError(what, { hint: `Run \`eskit migrate --db ${target.display}\` first.` });
    }
  } catch (error) {
    await backend.close().catch(() => undefined);
    throw error;
  }
  return {
    target,
    store: backend.store,
    deadLetters: backend.deadLetters,
    admin: backend.admin,
    schema,
    adapter: { backend: 'sqlite', store: backend.store },
    close: () => backend.close(),
  };
}

function openFailure(error: unknown, target: SqliteTarget): CliError {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && NOT_A_DATABASE.has(code)) {
    return new CliError(`cannot read ${target.path} as a SQLite database: ${messageOf(error)}`, { hint: 'Is --db pointing at an eskit SQLite file?', cause: error });
  }
  return new CliError(`cannot open SQLite database ${target.path}: ${messageOf(error)}`, { hint: 'Check --db and the file permissions.', cause: error });
}
