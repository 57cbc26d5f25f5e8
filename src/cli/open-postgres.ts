import type { SchemaState } from '../core/admin.js';
import { isEskitError } from '../core/errors.js';
import type { EventShape } from '../core/event.js';
import { postgres } from '../postgres/index.js';
import type { PostgresBackend } from '../postgres/index.js';
import type { CliDatabase, OpenOptions } from './database.js';
import { CliError, messageOf } from './errors.js';
import type { DatabaseTarget } from './target.js';

type PostgresTarget = Extract<DatabaseTarget, { kind: 'postgres' }>;

/** How the CLI's sessions show in pg_stat_activity, unless the URL names one. */
const APPLICATION_NAME = 'eskit-cli';

/**
 * Opens the target's schema through the adapter's backend (no leader election: the CLI never leads;
 * nothing migrated unless asked), and checks its version.
 */
export async function openPostgres(target: PostgresTarget, options: OpenOptions): Promise<CliDatabase> {
  const backend: PostgresBackend<EventShape> = postgres<EventShape>({
    connectionString: withApplicationName(target.connectionString),
    schema: target.schema,
    migrate: false,
    leaderElection: false,
    registry: options.registry,
    logger: options.logger,
  });
  let schema: SchemaState;
  try {
    try {
      schema = await backend.admin.schema();
    } catch (error) {
      throw connectFailure(error, target);
    }
    if (options.requireMigrated && schema.version < schema.latest) {
      const what = !schema.exists
        ? `schema "${target.schema}" does not exist`
        : schema.version === 0
          ? `schema "${target.schema}" has no eskit tables (it was never migrated)`
          : `schema "${target.schema}" is at version ${schema.version}, this eskit needs ${schema.latest}`;
      throw new CliError(what, { hint: `Check --schema, or run \`eskit migrate --db '${target.safeUrl.replaceAll("'", "'\\''")}' --schema ${target.schema}\` first.` });
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
    adapter: { backend: 'postgres', store: backend.store, schema: backend.schema },
    close: () => backend.close(),
  };
}

function withApplicationName(connectionString: string): string {
  try {
    if (new URL(connectionString).searchParams.has('application_name')) return connectionString;
  } catch {
    return connectionString;
  }
  const [base, fragment] = connectionString.split('#', 2);
  const joined = `${base}${base?.includes('?') ? '&' : '?'}application_name=${APPLICATION_NAME}`;
  return fragment === undefined ? joined : `${joined}#${fragment}`;
}

/** The driver's error under the adapter's ConnectionError, whose code says what happened. */
function rootCause(error: unknown): unknown {
  return isEskitError(error, 'ESKIT_CONNECTION') && error.cause !== undefined ? error.cause : error;
}

/** A failure of the first call in words an operator can act on; not a connection failure: as it is. */
function connectFailure(error: unknown, target: PostgresTarget): unknown {
  if (!isEskitError(error, 'ESKIT_CONNECTION')) return error;
  const cause = rootCause(error);
  const code = (cause as { code?: unknown } | null)?.code;
  const where = hostOf(target);
  const reason = messageOf(cause) || String(code ?? 'unknown error');
  if (code === 'ECONNREFUSED') {
    return new CliError(`cannot connect to PostgreSQL at ${where}: connection refused`, { hint: 'Is the server running, and are host and port in --db right?', cause: error });
  }
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    return new CliError(`cannot connect to PostgreSQL at ${where}: host not found`, { hint: 'Check the host name in --db.', cause: error });
  }
  if (/timeout/i.test(reason) || code === 'ETIMEDOUT' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH') {
    return new CliError(`cannot connect to PostgreSQL at ${where}: no answer (${reason})`, { hint: 'Check the host, port and network (firewall) in --db.', cause: error });
  }
  if (code === '28P01' || code === '28000') {
    return new CliError(`PostgreSQL at ${where} refused the login: ${reason}`, { hint: 'Check the user and password in --db.', cause: error });
  }
  if (code === '3D000') return new CliError(`${reason} (at ${where})`, { hint: 'Check the database name in --db.', cause: error });
  return new CliError(`cannot connect to PostgreSQL at ${where}: ${reason}`, { hint: 'Check --db.', cause: error });
}

function hostOf(target: PostgresTarget): string {
  try {
    const url = new URL(target.connectionString);
    return `${url.hostname || 'localhost'}:${url.port || '5432'}`;
  } catch {
    return target.display;
  }
}
