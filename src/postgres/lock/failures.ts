import { describeError, isEskitError } from '../../core/errors.js';

/** The SQLSTATE of a server error; undefined for anything else (Node's ECONNRESET is no SQLSTATE). */
export function sqlState(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.length === 5 ? code : undefined;
}

/** describeError, with the SQLSTATE: a server error's message alone does not say which class it is. */
export function describeFailure(error: unknown): string {
  const code = sqlState(error);
  return code === undefined ? describeError(error) : `SQLSTATE ${code}: ${describeError(error)}`;
}

/**
 * True for errors that waiting can heal, so that a standby goes on waiting (over a new session, with
 * backoff) instead of failing after hours of standing by:
 * - no SQLSTATE: a socket or driver error (refused, reset, timed out), unless eskit raised it itself;
 * - 08 connection exception;
 * - 25006 read_only_sql_transaction: this session landed on a standby or on a server turned read-only,
 *   as during a failover before the replica is promoted (the rest of class 25 are bugs of the caller);
 * - 40 transaction rollback (serialization failure, deadlock): trying again is the cure;
 * - 53 insufficient resources (too many connections, out of memory, disk full);
 * - 55P03 lock_not_available (a lock_timeout while an ALTER SEQUENCE held the token sequence);
 * - 57 operator intervention (57014 statement cancelled or timed out, shutting down, starting up,
 *   terminated, idle_session_timeout);
 * - 58000 system_error and 58030 io_error: the host's trouble, which a failover leaves behind.
 * Everything else is a fault of the settings or of the database that waiting will not fix: 28 (wrong
 * credentials, no pg_hba entry), 3D000 (no such database), 3F000 and 42 (missing schema or sequence,
 * no privilege, a setting this server does not know), 22 (the token sequence at its maximum), 0A, XX
 * (internal error, corruption), and eskit's own errors such as a failed migration.
 */
export function isTransient(error: unknown): boolean {
  const code = sqlState(error);
  if (code === undefined) return !isEskitError(error);
  return (
    code.startsWith('08') ||
    code === '25006' ||
    code.startsWith('40') ||
    code.startsWith('53') ||
    code === '55P03' ||
    code.startsWith('57') ||
    code === '58000' ||
    code === '58030'
  );
}

/** True for a failure of the connection itself (it is gone or going), not an error of one statement. */
export function isConnectionFailure(error: unknown, connection: { readonly dead: boolean }): boolean {
  if (connection.dead) return true;
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code !== 'string' || code.length !== 5 || code.startsWith('08') || code.startsWith('57P');
}
