// The SQL of eskit's append functions, as the migrations create them: append_one and append (one
// append per call) and append_group (several, see GroupCommit). Generated text per schema; each
// migration that changes one says so in migrations.ts.
import { advisoryKey, notifyChannel } from './schema.js';

/** SQLSTATE raised by `<schema>.append` and `<schema>.append_one` when the expected version does not hold; DETAIL is the actual version. */
export const VERSION_CONFLICT_SQLSTATE = 'ES409';
/** SQLSTATE raised by the append functions (from migration 12) for a stream deleted with appends: 'refuse'. */
export const STREAM_DELETED_SQLSTATE = 'ES410';

/** What `append_group` says in an append's offset when it refused it: a version conflict, a duplicate id. */
export const GROUP_REFUSED_VERSION = -1;
export const GROUP_REFUSED_DUPLICATE = -2;
/** From migration 12: the stream was deleted with appends: 'refuse'. */
export const GROUP_REFUSED_DELETED = -3;

/**
 * Whether the stream's latest lifecycle event (its lowest negative version) refuses appends; false
 * when it has none. `stream` is an SQL expression. Asked only for a stream at version 0, so appends to
 * existing streams never pay for it (from migration 12, and in appendOneStatements).
 */
export function refusesAppendsSql(s: string, stream: string): string {
  // By the data, not the type: a delete with appends 'refuse' and an archive (migration 14) both say so.
  return `coalesce((SELECT l.data->>'appends' = 'refuse' FROM ${s}.events l
    WHERE l.stream_id = ${stream} AND l.stream_version < 0 ORDER BY l.stream_version LIMIT 1), false)`;
}

/** Lifecycle events (migration 9) have negative versions: every version lookup from migration 12 on leaves them out. */
function eventsOnly(lifecycle: boolean, alias: string): string {
  return lifecycle ? ` AND ${alias}.stream_version > 0` : '';
}

/** How the append functions receive the non-numeric expected versions (numbers pass through, >= 0). */
export const EXPECTED_ANY = -1;
export const EXPECTED_NO_STREAM = -2;
export const EXPECTED_STREAM_EXISTS = -3;

/**
 * plpgsql that refuses an append to a stream deleted with appends 'refuse'. Only where the stream
 * looks new (version 0), so an append to a stream with events pays nothing for it.
 */
function refuseDeletedStream(s: string, indent: string): string {
  return `
${indent}IF actual = 0 AND ${refusesAppendsSql(s, 'p_stream_id')} THEN
${indent}  RAISE EXCEPTION USING ERRCODE = '${STREAM_DELETED_SQLSTATE}',
${indent}    MESSAGE = format('eskit: stream %s was deleted or archived and refuses appends', p_stream_id);
${indent}END IF;`;
}

/**
 * The serialised head shared by both append functions: take the append lock, read the stream's version
 * with a fresh snapshot, check the expected version. Generated text rather than a helper function, as
 * a nested plpgsql call would cost time inside the serialised section.
 */
function lockAndCheck(s: string, rawSchema: string, lifecycle = false): string {
  const [lockClass, lockObject] = advisoryKey('append', rawSchema);
  const refused = lifecycle ? refuseDeletedStream(s, '  ') : '';
  return `
  PERFORM pg_advisory_xact_lock(${lockClass}, ${lockObject});

  -- A new statement, so a new snapshot: it sees every append committed before the lock was granted.
  SELECT e.stream_version INTO actual
    FROM ${s}.events e WHERE e.stream_id = p_stream_id${eventsOnly(lifecycle, 'e')}
    ORDER BY e.stream_version DESC LIMIT 1;
  actual := coalesce(actual, 0);${refused}
  IF NOT (p_expected = ${EXPECTED_ANY} OR p_expected = actual
          OR (p_expected = ${EXPECTED_NO_STREAM} AND actual = 0) OR (p_expected = ${EXPECTED_STREAM_EXISTS} AND actual > 0)) THEN
    RAISE EXCEPTION USING ERRCODE = '${VERSION_CONFLICT_SQLSTATE}', DETAIL = actual::text,
      MESSAGE = format('eskit: stream %s is at version %s, the append expected %s', p_stream_id, actual, p_expected);
  END IF;

  -- Under the lock nobody else draws from the sequence.
  first_position := nextval('${s}.events_position');
  written_at := clock_timestamp();`;
}

/**
 * The two append functions. `notify`: whether they announce the last position written on the schema's
 * `appended` channel (from version 3 on). The notification is queued inside the function and delivered
 * when the append commits, never for one that rolls back.
 *
 * What the notification costs: nothing measurable for appends to one schema (they are serialised
 * anyway), but a transaction that notifies takes one lock per database for its commit, so appends to
 * DIFFERENT schemas of one database commit one at a time (measured: 8 writers on 8 schemas, 0.4-0.6x
 * the throughput without it). Where that matters more than the wake-up, turn it off with the setting
 * `eskit.notify = off` (per role, database or connection; subscribers then rely on polling).
 */
export function appendFunctions(s: string, rawSchema: string, options: { replace: boolean; notify: boolean; lifecycle?: boolean }): string {
  const lifecycle = options.lifecycle ?? false;
  const create = options.replace ? 'CREATE OR REPLACE' : 'CREATE';
  const notify = (position: string): string =>
    options.notify
      ? `\n  IF coalesce(current_setting('eskit.notify', true), '') <> 'off' THEN\n    PERFORM pg_notify('${notifyChannel('appended', rawSchema)}', (${position})::text);\n  END IF;`
      : '';
  return `${create} FUNCTION ${s}.append(
  p_stream_id text,
  p_expected bigint,
  p_ids uuid[],
  p_types text[],
  p_data jsonb[],
  p_metadata jsonb[],
  OUT first_position bigint,
  OUT last_version bigint,
  OUT written_at timestamptz
) LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
  n integer := coalesce(cardinality(p_ids), 0);
  actual bigint;
BEGIN
  IF n = 0 OR cardinality(p_types) IS DISTINCT FROM n OR cardinality(p_data) IS DISTINCT FROM n
     OR cardinality(p_metadata) IS DISTINCT FROM n THEN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'eskit: append needs ids, types, data and metadata of the same non-zero length';
  END IF;
${lockAndCheck(s, rawSchema, lifecycle)}
  IF n > 1 THEN
    -- Nobody else draws while we hold the lock, so first .. first + n - 1 are ours.
    PERFORM setval('${s}.events_position', first_position + n - 1);
  END IF;
  INSERT INTO ${s}.events (position, id, stream_id, stream_version, type, data, metadata, created_at)
  SELECT first_position + u.i - 1, u.id, p_stream_id, actual + u.i, u.type, u.data, u.metadata, written_at
    FROM unnest(p_ids, p_types, p_data, p_metadata) WITH ORDINALITY AS u(id, type, data, metadata, i);
  last_version := actual + n;${notify('first_position + n - 1')}
END
$fn$;

${appendOneHead(s, create)}
${lockAndCheck(s, rawSchema, lifecycle)}
  last_version := actual + 1;
  INSERT INTO ${s}.events (position, id, stream_id, stream_version, type, data, metadata, created_at)
  VALUES (first_position, p_id, p_stream_id, last_version, p_type, p_data, p_metadata, written_at);${notify('first_position')}
END
$fn$;
`;
}

/**
 * `append_group`: several appends, to one or more streams, in one call and one transaction. The adapter's
 * group commit sends it the appends that queued while the previous group was being written.
 *
 * Per append: `p_streams`, `p_expected`, `p_counts` (its events), `p_previous` (the index of the latest
 * earlier append in the group to the same stream, 0 if none). Per event, the appends' events in order:
 * `p_event_appends` (its append's index), `p_event_streams`, `p_ids`, `p_types`, `p_data`, `p_metadata`.
 * Per-event copies of what the appends say once cost a few bytes and spare every row an array lookup.
 *
 * Each append is judged alone, in the group's order, against the versions the earlier appends of the
 * group left: a version conflict or an id already in the log refuses that append only. Both are checked
 * before anything is written, under the append lock, where no other eskit writer can move them; so no
 * savepoint (each would be a subtransaction) and no exception is needed. Positions are drawn for the
 * accepted events only. The result, per append: `offsets` (0-based position offset from `base_position`
 * + 1, or GROUP_REFUSED_VERSION / GROUP_REFUSED_DUPLICATE) and `versions` (what the offset needs: the
 * stream's version after the append; the actual version on a conflict; the 1-based index of the
 * duplicate event in the append).
 */
export function appendGroupFunction(s: string, rawSchema: string, lifecycle = false): string {
  const [lockClass, lockObject] = advisoryKey('append', rawSchema);
  // Checked first: a stream that refuses appends refuses them whatever the expected version.
  const check = lifecycle
    ? `IF actual = 0 AND ${refusesAppendsSql(s, 'p_streams[a]')} THEN
      offsets[a] := ${GROUP_REFUSED_DELETED};
    ELSIF`
    : 'IF';
  return `
${lifecycle ? 'CREATE OR REPLACE' : 'CREATE'} FUNCTION ${s}.append_group(
  p_streams text[],
  p_expected bigint[],
  p_counts integer[],
  p_previous integer[],
  p_event_appends integer[],
  p_event_streams text[],
  p_ids uuid[],
  p_types text[],
  p_data jsonb[],
  p_metadata jsonb[],
  OUT base_position bigint,
  OUT offsets integer[],
  OUT versions bigint[],
  OUT written_at timestamptz
) LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
  appends integer := coalesce(cardinality(p_streams), 0);
  events integer := coalesce(cardinality(p_ids), 0);
  initial bigint[];
  running bigint[];
  starts integer[];
  taken uuid[];
  actual bigint;
  expected bigint;
  total integer := 0;
  first_event integer := 0;
  a integer;
  j integer;
BEGIN
  IF appends = 0 OR cardinality(p_expected) IS DISTINCT FROM appends OR cardinality(p_counts) IS DISTINCT FROM appends
     OR cardinality(p_previous) IS DISTINCT FROM appends OR events = 0 OR cardinality(p_event_appends) IS DISTINCT FROM events
     OR cardinality(p_event_streams) IS DISTINCT FROM events OR cardinality(p_types) IS DISTINCT FROM events
     OR cardinality(p_data) IS DISTINCT FROM events OR cardinality(p_metadata) IS DISTINCT FROM events THEN
    RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'eskit: append_group needs per-append and per-event arrays of matching, non-zero lengths';
  END IF;

  PERFORM pg_advisory_xact_lock(${lockClass}, ${lockObject});

  -- New statements, so new snapshots: they see every append committed before the lock was granted.
  SELECT array_agg(coalesce((SELECT e.stream_version FROM ${s}.events e WHERE e.stream_id = g.stream_id${eventsOnly(lifecycle, 'e')}
                              ORDER BY e.stream_version DESC LIMIT 1), 0) ORDER BY g.i)
    INTO initial
    FROM unnest(p_streams) WITH ORDINALITY AS g(stream_id, i);
  -- One index probe per id: the LIMIT keeps the planner from turning this into a join, which it may
  -- do by hash over the whole table (so did \`e.id = ANY (p_ids)\` and EXISTS: a group got slower as
  -- the log grew).
  SELECT array_agg(t.id) INTO taken
    FROM unnest(p_ids) AS g(id)
   CROSS JOIN LATERAL (SELECT e.id FROM ${s}.events e WHERE e.id = g.id LIMIT 1) AS t;

  offsets := array_fill(0, ARRAY[appends]);
  versions := array_fill(0::bigint, ARRAY[appends]);
  running := array_fill(0::bigint, ARRAY[appends]);
  starts := array_fill(0, ARRAY[appends]);
  FOR a IN 1 .. appends LOOP
    -- The version the earlier appends of the group left this stream at, or the stored one.
    actual := CASE WHEN p_previous[a] > 0 THEN running[p_previous[a]] ELSE initial[a] END;
    running[a] := actual;
    starts[a] := first_event;
    expected := p_expected[a];
    ${check} NOT (expected = ${EXPECTED_ANY} OR expected = actual
            OR (expected = ${EXPECTED_NO_STREAM} AND actual = 0) OR (expected = ${EXPECTED_STREAM_EXISTS} AND actual > 0)) THEN
      offsets[a] := ${GROUP_REFUSED_VERSION};
      versions[a] := actual;
    ELSIF taken IS NOT NULL AND p_ids[first_event + 1 : first_event + p_counts[a]] && taken THEN
      offsets[a] := ${GROUP_REFUSED_DUPLICATE};
      FOR j IN 1 .. p_counts[a] LOOP
        IF p_ids[first_event + j] = ANY (taken) THEN
          versions[a] := j;
          EXIT;
        END IF;
      END LOOP;
    ELSE
      offsets[a] := total;
      running[a] := actual + p_counts[a];
      versions[a] := running[a];
      total := total + p_counts[a];
    END IF;
    first_event := first_event + p_counts[a];
  END LOOP;

  IF total = 0 THEN
    RETURN;
  END IF;
  -- Under the lock nobody else draws from the sequence: base + 1 .. base + total are ours.
  base_position := nextval('${s}.events_position') - 1;
  IF total > 1 THEN
    PERFORM setval('${s}.events_position', base_position + total);
  END IF;
  written_at := clock_timestamp();
  INSERT INTO ${s}.events (position, id, stream_id, stream_version, type, data, metadata, created_at)
  SELECT base_position + offsets[u.a] + (u.i - starts[u.a]), u.id, u.stream_id,
         versions[u.a] - p_counts[u.a] + (u.i - starts[u.a]), u.type, u.data, u.metadata, written_at
    FROM unnest(p_event_appends, p_event_streams, p_ids, p_types, p_data, p_metadata) WITH ORDINALITY
           AS u(a, stream_id, id, type, data, metadata, i)
   WHERE offsets[u.a] >= 0;
  IF coalesce(current_setting('eskit.notify', true), '') <> 'off' THEN
    PERFORM pg_notify('${notifyChannel('appended', rawSchema)}', (base_position + total)::text);
  END IF;
END
$fn$;
`;
}

/** append_one's signature and declarations, the same in every version of its body (callers of older eskit versions rely on it). */
function appendOneHead(s: string, create: string): string {
  return `${create} FUNCTION ${s}.append_one(
  p_stream_id text,
  p_expected bigint,
  p_id uuid,
  p_type text,
  p_data jsonb,
  p_metadata jsonb,
  OUT first_position bigint,
  OUT last_version bigint,
  OUT written_at timestamptz
) LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
  actual bigint;
BEGIN`;
}

/**
 * `append_one` again, same signature, in two statements instead of four: the version is looked up, the
 * position drawn and the row written by one INSERT (its snapshot is taken after the lock is granted, as
 * the lookup's was), and only a refused append looks the version up again, for its error. Each
 * statement of a plpgsql function is an executor run of its own; this is the path of every lone
 * one-event append.
 */
export function fasterAppendOne(s: string, rawSchema: string, lifecycle = false): string {
  const [lockClass, lockObject] = advisoryKey('append', rawSchema);
  const refused = lifecycle ? ` AND NOT (v.version = 0 AND ${refusesAppendsSql(s, 'p_stream_id')})` : '';
  const refusal = lifecycle ? refuseDeletedStream(s, '    ') : '';
  return `
${appendOneHead(s, 'CREATE OR REPLACE')}
  PERFORM pg_advisory_xact_lock(${lockClass}, ${lockObject});
  INSERT INTO ${s}.events (position, id, stream_id, stream_version, type, data, metadata, created_at)
  SELECT nextval('${s}.events_position'), p_id, p_stream_id, v.version + 1, p_type, p_data, p_metadata, clock_timestamp()
    FROM (SELECT coalesce(max(e.stream_version), 0) AS version FROM ${s}.events e WHERE e.stream_id = p_stream_id${eventsOnly(lifecycle, 'e')}) AS v
   WHERE (p_expected = ${EXPECTED_ANY} OR p_expected = v.version
      OR (p_expected = ${EXPECTED_NO_STREAM} AND v.version = 0) OR (p_expected = ${EXPECTED_STREAM_EXISTS} AND v.version > 0))${refused}
  RETURNING position, stream_version, created_at INTO first_position, last_version, written_at;
  IF NOT FOUND THEN
    -- Still under the lock: the version that refused the append is the one reported.
    SELECT coalesce(max(e.stream_version), 0) INTO actual FROM ${s}.events e WHERE e.stream_id = p_stream_id${eventsOnly(lifecycle, 'e')};${refusal}
    RAISE EXCEPTION USING ERRCODE = '${VERSION_CONFLICT_SQLSTATE}', DETAIL = actual::text,
      MESSAGE = format('eskit: stream %s is at version %s, the append expected %s', p_stream_id, actual, p_expected);
  END IF;
  IF coalesce(current_setting('eskit.notify', true), '') <> 'off' THEN
    PERFORM pg_notify('${notifyChannel('appended', rawSchema)}', first_position::text);
  END IF;
END
$fn$;
`;
}

/**
 * A lone one-event append as two plain statements instead of a function call: the append lock, then
 * one INSERT that looks the stream version up, checks the expected version, draws the position, and
 * notifies ($1 stream, $2 expected, $3 id, $4 type, $5 data, $6 metadata). Its one row: the version the
 * append was judged against, then the position, the time in ms and nothing (the notification), the
 * last three NULL when the expected version did not hold; last, whether the stream refuses appends (it was
 * deleted with appends: 'refuse'; the append is not written). Sent in one round trip and one implicit
 * transaction (see locked-append.ts); the INSERT is a statement after the lock, so its snapshot is
 * taken with the lock held, as append_one's is. Why: a plpgsql call costs ~30-40 µs, ~10 % of a lone
 * append on loopback.
 */
export function appendOneStatements(s: string, rawSchema: string): { lock: string; insert: string } {
  const [lockClass, lockObject] = advisoryKey('append', rawSchema);
  return {
    lock: `SELECT pg_advisory_xact_lock(${lockClass}, ${lockObject})`,
    // \`refused\`: a new stream (version 0) deleted with appends: 'refuse'. The CASE asks only then, so an
    // append to an existing stream costs what it did before lifecycle events existed.
    insert: `WITH current AS (
  SELECT v.version, CASE WHEN v.version = 0 THEN ${refusesAppendsSql(s, '$1')} ELSE false END AS refused
    FROM (SELECT coalesce(max(e.stream_version), 0) AS version FROM ${s}.events e WHERE e.stream_id = $1 AND e.stream_version > 0) AS v
), written AS (
  INSERT INTO ${s}.events (position, id, stream_id, stream_version, type, data, metadata, created_at)
  SELECT nextval('${s}.events_position'), $3, $1, current.version + 1, $4, $5, $6, clock_timestamp()
    FROM current
   WHERE NOT current.refused AND ($2::bigint = ${EXPECTED_ANY} OR $2::bigint = current.version
      OR ($2::bigint = ${EXPECTED_NO_STREAM} AND current.version = 0) OR ($2::bigint = ${EXPECTED_STREAM_EXISTS} AND current.version > 0))
  RETURNING position, created_at
), notified AS (
  SELECT pg_notify('${notifyChannel('appended', rawSchema)}', written.position::text) FROM written
   WHERE coalesce(current_setting('eskit.notify', true), '') <> 'off'
)
SELECT current.version, written.position, (extract(epoch FROM written.created_at) * 1000)::float8, (SELECT count(*) FROM notified), current.refused
  FROM current LEFT JOIN written ON true`,
  };
}
