// Stream lifecycle on PostgreSQL (see lifecycle.ts in core): migration 12's SQL (the append functions
// again, now blind to lifecycle events and refusing appends to a stream deleted with 'refuse', and the
// delete_stream / truncate_stream functions), and the client side that calls them.
import { StreamNotFoundError } from '../core/errors.js';
import { STREAM_ARCHIVED, STREAM_DELETED, STREAM_TRUNCATED, truncateBeyondVersion } from '../core/lifecycle.js';
import type { LifecycleRequest } from '../core/lifecycle.js';
import { appendFunctions, appendGroupFunction, EXPECTED_ANY, EXPECTED_NO_STREAM, EXPECTED_STREAM_EXISTS, fasterAppendOne, VERSION_CONFLICT_SQLSTATE } from './append-functions.js';
import { encodeExpected } from './append-group.js';
import { advisoryKey, notifyChannel } from './schema.js';

/** SQLSTATE of delete_stream / truncate_stream for a stream with no events. */
export const STREAM_NOT_FOUND_SQLSTATE = 'ES404';
/** SQLSTATE of truncate_stream when `before` is past the stream's version; DETAIL is the version. */
export const TRUNCATE_BEYOND_SQLSTATE = 'ES422';

/**
 * The serialised head of both functions: the append lock (so a lifecycle event takes its position
 * like an append, and no append of the stream runs meanwhile), the stream's version read with a
 * snapshot taken under the lock, the expected-version check.
 */
function lockAndCheck(s: string, rawSchema: string, operation: string): string {
  const [lockClass, lockObject] = advisoryKey('append', rawSchema);
  return `
  PERFORM pg_advisory_xact_lock(${lockClass}, ${lockObject});
  SELECT coalesce(max(e.stream_version), 0) INTO actual FROM ${s}.events e WHERE e.stream_id = p_stream_id AND e.stream_version > 0;
  IF actual = 0 THEN
    RAISE EXCEPTION USING ERRCODE = '${STREAM_NOT_FOUND_SQLSTATE}', MESSAGE = format('eskit: cannot ${operation} stream %s: it has no events', p_stream_id);
  END IF;
  IF NOT (p_expected = ${EXPECTED_ANY} OR p_expected = actual
          OR (p_expected = ${EXPECTED_NO_STREAM} AND actual = 0) OR (p_expected = ${EXPECTED_STREAM_EXISTS} AND actual > 0)) THEN
    RAISE EXCEPTION USING ERRCODE = '${VERSION_CONFLICT_SQLSTATE}', DETAIL = actual::text,
      MESSAGE = format('eskit: stream %s is at version %s, the ${operation} expected %s', p_stream_id, actual, p_expected);
  END IF;
  written_at := clock_timestamp();`;
}

/** plpgsql moving the stream's events (not its lifecycle events) out of the log into `table`, stamped with the write's time. */
function moveStreamRows(s: string, table: string, stampColumn: string, indent: string): string {
  return [
    'WITH moved AS (',
    `  DELETE FROM ${s}.events e WHERE e.stream_id = p_stream_id AND e.stream_version > 0`,
    '  RETURNING e.position, e.id, e.stream_id, e.stream_version, e.type, e.data, e.metadata, e.created_at',
    ')',
    `INSERT INTO ${s}.${table} (position, id, stream_id, stream_version, type, data, metadata, created_at, ${stampColumn})`,
    'SELECT m.position, m.id, m.stream_id, m.stream_version, m.type, m.data, m.metadata, m.created_at, written_at FROM moved m;',
  ]
    .map((line) => indent + line)
    .join('\n');
}

/** Appends the lifecycle event: next negative version of the stream, a fresh position (drawn under the lock), notified on commit. */
function appendLifecycleEvent(s: string, rawSchema: string, type: string, data: string): string {
  return `
  SELECT coalesce(min(e.stream_version), 0) - 1 INTO next_version FROM ${s}.events e WHERE e.stream_id = p_stream_id AND e.stream_version < 0;
  lifecycle_position := nextval('${s}.events_position');
  INSERT INTO ${s}.events (position, id, stream_id, stream_version, type, data, metadata, created_at)
  VALUES (lifecycle_position, p_id, p_stream_id, next_version, '${type}', ${data}, '{}'::jsonb, written_at);
  IF coalesce(current_setting('eskit.notify', true), '') <> 'off' THEN
    PERFORM pg_notify('${notifyChannel('appended', rawSchema)}', lifecycle_position::text);
  END IF;`;
}

function lifecycleFunctions(s: string, rawSchema: string): string {
  return `
CREATE FUNCTION ${s}.delete_stream(
  p_stream_id text,
  p_expected bigint,
  p_hard boolean,
  p_refuse boolean,
  p_id uuid,
  OUT lifecycle_position bigint,
  OUT written_at timestamptz
) LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
  actual bigint;
  next_version bigint;
BEGIN${lockAndCheck(s, rawSchema, 'delete')}
  IF p_hard THEN
    DELETE FROM ${s}.deleted_events d WHERE d.stream_id = p_stream_id;
    DELETE FROM ${s}.events e WHERE e.stream_id = p_stream_id AND e.stream_version > 0;
  ELSE
${moveStreamRows(s, 'deleted_events', 'deleted_at', '    ')}
  END IF;
  DELETE FROM ${s}.snapshots sn WHERE sn.stream_id = p_stream_id;${appendLifecycleEvent(
    s,
    rawSchema,
    STREAM_DELETED,
    "jsonb_build_object('version', actual, 'hard', p_hard, 'appends', CASE WHEN p_refuse THEN 'refuse' ELSE 'restart' END)",
  )}
END
$fn$;

CREATE FUNCTION ${s}.truncate_stream(
  p_stream_id text,
  p_expected bigint,
  p_before bigint,
  p_id uuid,
  OUT lifecycle_position bigint,
  OUT written_at timestamptz
) LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
  actual bigint;
  next_version bigint;
BEGIN${lockAndCheck(s, rawSchema, 'truncate')}
  IF p_before > actual THEN
    RAISE EXCEPTION USING ERRCODE = '${TRUNCATE_BEYOND_SQLSTATE}', DETAIL = actual::text,
      MESSAGE = format('eskit: cannot truncate stream %s before version %s: it is at version %s', p_stream_id, p_before, actual);
  END IF;
  DELETE FROM ${s}.events e WHERE e.stream_id = p_stream_id AND e.stream_version > 0 AND e.stream_version < p_before;${appendLifecycleEvent(
    s,
    rawSchema,
    STREAM_TRUNCATED,
    "jsonb_build_object('before', p_before, 'version', actual)",
  )}
END
$fn$;
`;
}

/**
 * Migration 14: the archive table, archive_stream (a soft delete whose rows move to archived_events,
 * refusing later appends), and the append functions again, now refusing by the lifecycle event's
 * data (appends: 'refuse'), which an archive writes too.
 */
export function archiveMigrationSql(s: string, rawSchema: string): string {
  return (
    `
CREATE TABLE ${s}.archived_events (
  position bigint NOT NULL,
  id uuid NOT NULL,
  stream_id text NOT NULL,
  stream_version bigint NOT NULL,
  type text NOT NULL,
  data jsonb NOT NULL,
  metadata jsonb NOT NULL,
  created_at timestamptz NOT NULL,
  archived_at timestamptz NOT NULL,
  CONSTRAINT archived_events_pkey PRIMARY KEY (position)
);
CREATE INDEX archived_events_stream ON ${s}.archived_events (stream_id, stream_version);

CREATE FUNCTION ${s}.archive_stream(
  p_stream_id text,
  p_expected bigint,
  p_id uuid,
  OUT lifecycle_position bigint,
  OUT written_at timestamptz
) LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
  actual bigint;
  next_version bigint;
BEGIN${lockAndCheck(s, rawSchema, 'archive')}
${moveStreamRows(s, 'archived_events', 'archived_at', '  ')}
  DELETE FROM ${s}.snapshots sn WHERE sn.stream_id = p_stream_id;${appendLifecycleEvent(
    s,
    rawSchema,
    STREAM_ARCHIVED,
    "jsonb_build_object('version', actual, 'appends', 'refuse')",
  )}
END
$fn$;
` +
    appendFunctions(s, rawSchema, { replace: true, notify: true, lifecycle: true }) +
    appendGroupFunction(s, rawSchema, true) +
    fasterAppendOne(s, rawSchema, true)
  );
}

/**
 * Migration 12: the append functions again (same signatures), their version lookups limited to
 * stream_version > 0 and refusing a stream deleted with appends: 'refuse' (asked only when the stream
 * is at version 0), then delete_stream and truncate_stream.
 */
export function lifecycleMigrationSql(s: string, rawSchema: string): string {
  return (
    appendFunctions(s, rawSchema, { replace: true, notify: true, lifecycle: true }) +
    appendGroupFunction(s, rawSchema, true) +
    fasterAppendOne(s, rawSchema, true) +
    lifecycleFunctions(s, rawSchema)
  );
}

/** The call of delete_stream or truncate_stream for `request`: text and values; its one row is (position, time in ms). */
export function lifecycleCall(s: string, streamId: string, request: LifecycleRequest): { text: string; values: unknown[] } {
  const columns = 'SELECT lifecycle_position, (extract(epoch FROM written_at) * 1000)::float8';
  const expected = encodeExpected(request.expected);
  if (request.kind === 'delete') {
    return { text: `${columns} FROM ${s}.delete_stream($1, $2, $3, $4, $5)`, values: [streamId, expected, request.hard, request.appends === 'refuse', request.id] };
  }
  if (request.kind === 'archive') return { text: `${columns} FROM ${s}.archive_stream($1, $2, $3)`, values: [streamId, expected, request.id] };
  return { text: `${columns} FROM ${s}.truncate_stream($1, $2, $3, $4)`, values: [streamId, expected, request.before, request.id] };
}

/** The eskit error for what delete_stream / truncate_stream raised, or undefined for any other error. */
export function lifecycleRefusal(error: unknown, streamId: string, request: LifecycleRequest): Error | undefined {
  const { code, detail } = (error ?? {}) as { code?: unknown; detail?: unknown };
  if (code === STREAM_NOT_FOUND_SQLSTATE) return new StreamNotFoundError(streamId, request.kind);
  if (code === TRUNCATE_BEYOND_SQLSTATE && request.kind === 'truncate') return truncateBeyondVersion(streamId, request.before, Number(detail));
  return undefined;
}
