import { ConcurrencyError, DuplicateEventIdError, MigrationError, SerializationError, StreamDeletedError } from '../core/errors.js';
import type { PreparedEvent } from '../core/store-base.js';
import type { ExpectedVersion } from '../core/store.js';
import type pg from 'pg';
import { connectionFailure } from './connection.js';
import { STREAM_DELETED_SQLSTATE, VERSION_CONFLICT_SQLSTATE } from './append-functions.js';

/** The fields of a server error that eskit looks at (pg's DatabaseError has them all). */
interface PgServerError {
  code: string;
  message: string;
  detail?: string;
  constraint?: string;
}

function serverError(error: unknown): PgServerError | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const { code, message } = error as { code?: unknown; message?: unknown };
  // SQLSTATEs are five characters; Node's own errors (ECONNREFUSED, ...) are not.
  if (typeof code !== 'string' || code.length !== 5 || typeof message !== 'string') return undefined;
  return error as PgServerError;
}

/**
 * True when the server refused a statement and the connection is worth keeping: an error with a
 * SQLSTATE, except connection exceptions (class 08), a transaction left aborted (25: a client given
 * back in a failed transaction by other code on a shared pool), resources (53), operator intervention
 * (57: shutdown, terminated, canceled), system errors (58) and internal errors (XX).
 */
export function isStatementError(error: unknown): boolean {
  const code = serverError(error)?.code;
  return code !== undefined && !CONNECTION_NOT_WORTH_KEEPING.has(code.slice(0, 2));
}

const CONNECTION_NOT_WORTH_KEEPING = new Set(['08', '25', '53', '57', '58', 'XX']);

/** True when the error says the eskit tables or functions are not there: the schema was not migrated. */
function isMissingSchema(e: PgServerError): boolean {
  // undefined_table, invalid_schema_name, undefined_function
  return e.code === '42P01' || e.code === '3F000' || e.code === '42883';
}

/**
 * Errors any store call may hit, turned into eskit errors; anything else is returned unchanged.
 * `via` (the pool or client the call ran on) names the server in connection errors.
 */
export function translateError(error: unknown, schema: string, via?: pg.Pool | pg.ClientBase): unknown {
  const failure = connectionFailure(error, via);
  if (failure) return failure;
  const e = serverError(error);
  if (e && isMissingSchema(e)) {
    return new MigrationError(
      `The eskit tables are missing from schema "${schema}" (${e.message}). Call migrate() on the store, or create it without migrate: false.`,
      { cause: error },
    );
  }
  return error;
}

/** Errors of an append, turned into eskit errors; anything else is returned unchanged. */
export function translateAppendError(
  error: unknown,
  schema: string,
  streamId: string,
  expected: ExpectedVersion,
  events: readonly PreparedEvent[],
  via?: pg.Pool | pg.ClientBase,
): unknown {
  const e = serverError(error);
  if (!e) return translateError(error, schema, via);
  if (e.code === VERSION_CONFLICT_SQLSTATE) {
    return new ConcurrencyError(streamId, expected, Number(e.detail));
  }
  if (e.code === STREAM_DELETED_SQLSTATE) return new StreamDeletedError(streamId);
  if (e.code === '23505' && e.constraint === 'events_id_key') {
    // DETAIL: Key (id)=(0190...) already exists.
    const id = /\(id\)=\(([^)]+)\)/.exec(e.detail ?? '')?.[1] ?? duplicateInBatch(events) ?? 'unknown';
    return new DuplicateEventIdError(id);
  }
  // 22P05: jsonb cannot hold \u0000. 22P02 on json input: a lone UTF-16 surrogate (\ud800).
  if (e.code === '22P05' || (e.code === '22P02' && /json/i.test(e.message))) {
    return unstorable(events, e, error);
  }
  return translateError(error, schema, via);
}

function duplicateInBatch(events: readonly PreparedEvent[]): string | undefined {
  const seen = new Set<string>();
  for (const { id } of events) {
    const key = id.toLowerCase();
    if (seen.has(key)) return id;
    seen.add(key);
  }
  return undefined;
}

// An escaped NUL as JSON.stringify writes it, not preceded by an escaping backslash.
const ESCAPED_NUL = /(?<!\\)(?:\\\\)*\\u0000/;
// JSON.stringify writes paired surrogates as characters and escapes only lone ones.
const ESCAPED_LONE_SURROGATE = /(?<!\\)(?:\\\\)*\\ud[89a-f][0-9a-f]{2}/i;

function unstorable(events: readonly PreparedEvent[], e: PgServerError, cause: unknown): SerializationError {
  const pattern = e.code === '22P05' ? ESCAPED_NUL : ESCAPED_LONE_SURROGATE;
  const index = events.findIndex((ev) => pattern.test(ev.data) || pattern.test(ev.metadata));
  const event = events[index];
  const where = event ? `${pattern.test(event.data) ? 'data' : 'metadata'} of event ${index} (${event.type})` : 'an event of the batch';
  const what = e.code === '22P05' ? 'the character U+0000 (NUL)' : 'a lone UTF-16 surrogate';
  // The default message speaks of BigInt and cycles; this value is valid JSON that PostgreSQL refuses.
  const reason =
    `The ${where} contains ${what} in a string, which PostgreSQL jsonb cannot store (${e.message}); nothing was written. ` +
    'Remove or replace it before appending.';
  return new SerializationError(where, { cause, reason });
}
