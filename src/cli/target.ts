import { isAbsolute, resolve } from 'node:path';
import { UsageError } from './errors.js';

/**
 * The PostgreSQL adapter's default schema (its DEFAULT_SCHEMA; a test checks they agree). Not imported:
 * parsing a URL must not load the adapter, whose driver a SQLite-only install does not have.
 */
export const DEFAULT_SCHEMA = 'eskit';

/** Which database a command works on, from `--db` (or `DATABASE_URL`) and `--schema`. */
export type DatabaseTarget =
  | { kind: 'sqlite'; /** Absolute. */ path: string; /** For messages. */ display: string }
  | {
      kind: 'postgres';
      connectionString: string;
      schema: string;
      /** The URL without its password, for messages. */
      safeUrl: string;
      /** The same with the schema, for messages. */
      display: string;
    };

const SCHEMA = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * Reads `--db` / `DATABASE_URL`:
 * - `sqlite:<path>` (relative to `cwd`; `sqlite://<path>` and `sqlite:///abs/path` work too), or a
 *   plain file path,
 * - `postgres://…` or `postgresql://…` (a libpq-style URL; `--schema`, default 'eskit', picks the tenant).
 * A missing URL is a usage error (exit 2); one eskit cannot use is a failed operation (exit 1).
 */
export function parseTarget(url: string | undefined, schema: string | undefined, cwd: string): DatabaseTarget {
  if (url === undefined || url.trim() === '') {
    throw new UsageError('no database given', {
      hint: 'Pass --db sqlite:<file> or --db postgres://user@host:5432/db, or set DATABASE_URL.',
    });
  }
  const text = url.trim();
  // A plain file path (no scheme; a Windows drive letter is not one) is a SQLite file too.
  const plainPath = !/^[a-z][a-z0-9+.-]*:/i.test(text) || /^[a-z]:[\\/]/i.test(text);
  if (plainPath || /^sqlite:/i.test(text)) {
    if (schema !== undefined) throw new UsageError('--schema applies to PostgreSQL only', { hint: 'Drop --schema for a SQLite database.' });
    let path = plainPath ? text : text.slice('sqlite:'.length);
    if (path.startsWith('//')) path = path.slice(2);
    if (path === '' || path === ':memory:') {
      throw new UsageError(`"${text}" names no database file`, { hint: 'Use sqlite:<path to the file>, e.g. sqlite:data/app.db.' });
    }
    const absolute = isAbsolute(path) ? path : resolve(cwd, path);
    return { kind: 'sqlite', path: absolute, display: `sqlite:${absolute}` };
  }
  if (/^postgres(ql)?:\/\//i.test(text)) {
    let parsed: URL;
    try {
      parsed = new URL(text);
    } catch {
      throw new UsageError(`"${redact(text)}" is not a valid PostgreSQL URL`, { hint: 'Use postgres://user:password@host:5432/database.' });
    }
    const chosen = schema ?? DEFAULT_SCHEMA;
    if (!SCHEMA.test(chosen)) {
      throw new UsageError(`--schema must be a lower-case SQL identifier (a-z, 0-9, _), got "${chosen}"`);
    }
    if (parsed.password !== '') parsed.password = '***';
    // libpq also takes the password as a query parameter.
    if (parsed.searchParams.has('password')) parsed.searchParams.set('password', '***');
    return { kind: 'postgres', connectionString: text, schema: chosen, safeUrl: parsed.toString(), display: `${parsed.toString()} (schema ${chosen})` };
  }
  throw new UsageError(`"${redact(text)}" is not a database URL eskit understands`, {
    hint: 'Use sqlite:<file> or postgres://user@host:5432/db.',
  });
}

/** The URL with any password replaced, for messages. */
function redact(text: string): string {
  return text.replace(/(\/\/[^:/@]*:)[^@/]*@/, '$1***@');
}
