import type pg from 'pg';
import { MigrationError } from '../core/errors.js';
import { connectionFailure, hearWhileCheckedOut } from './connection.js';
import { advisoryKey, notifyChannel, quoteSchema } from './schema.js';

/**
 * One step of the schema. Steps are applied in `version` order, each in its own transaction, and
 * recorded in `<schema>.migrations`. Never edit a released step: add a new one (checkpoints, dead
 * letters and leases come as versions 2, 3, ...).
 */
export interface PostgresMigration {
  version: number;
  name: string;
  /** The SQL of the step; `schema` is already validated and quoted. May hold several statements. */
  sql(schema: string, rawSchema: string): string;
}

/** SQLSTATE raised by `<schema>.append` and `<schema>.append_one` when the expected version does not hold; DETAIL is the actual version. */
export const VERSION_CONFLICT_SQLSTATE = 'ES409';

/** What `append_group` says in an append's offset when it refused it: a version conflict, a duplicate id. */
export const GROUP_REFUSED_VERSION = -1;
export const GROUP_REFUSED_DUPLICATE = -2;

/** How the append functions receive the non-numeric expected versions (numbers pass through, >= 0). */
export const EXPECTED_ANY = -1;
export const EXPECTED_NO_STREAM = -2;
export const EXPECTED_STREAM_EXISTS = -3;

/**
 * The serialised head shared by both append functions: take the append lock, read the stream's version
 * with a fresh snapshot, check the expected version. Generated text rather than a helper function, as
 * a nested plpgsql call would cost time inside the serialised section.
 */
function lockAndCheck(s: string, rawSchema: string): string {
  const [lockClass, lockObject] = advisoryKey('append', rawSchema);
  return `
  PERFORM pg_advisory_xact_lock(${lockClass}, ${lockObject});

  -- A new statement, so a new snapshot: it sees every append committed before the lock was granted.
  SELECT e.stream_version INTO actual
    FROM ${s}.events e WHERE e.stream_id = p_stream_id
    ORDER BY e.stream_version DESC LIMIT 1;
  actual := coalesce(actual, 0);
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
function appendFunctions(s: string, rawSchema: string, options: { replace: boolean; notify: boolean }): string {
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
${lockAndCheck(s, rawSchema)}
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

${create} FUNCTION ${s}.append_one(
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
BEGIN
${lockAndCheck(s, rawSchema)}
  last_version := actual + 1;
  INSERT INTO ${s}.events (position, id, stream_id, stream_version, type, data, metadata, created_at)
  VALUES (first_position, p_id, p_stream_id, last_version, p_type, p_data, p_metadata, written_at);${notify('first_position')}
END
$fn$;
`;
}

const eventsMigration: PostgresMigration = {
  version: 1,
  name: 'events',
  sql: (s, rawSchema) => `
CREATE SEQUENCE ${s}.events_position AS bigint;

CREATE TABLE ${s}.events (
  position bigint NOT NULL,
  id uuid NOT NULL,
  stream_id text NOT NULL,
  stream_version bigint NOT NULL,
  type text NOT NULL,
  data jsonb NOT NULL,
  metadata jsonb NOT NULL,
  created_at timestamptz NOT NULL,
  CONSTRAINT events_pkey PRIMARY KEY (position),
  CONSTRAINT events_id_key UNIQUE (id),
  CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version),
  CONSTRAINT events_stream_version_check CHECK (stream_version >= 1)
);

ALTER SEQUENCE ${s}.events_position OWNED BY ${s}.events.position;

-- append(stream, expected, ids[], types[], data[], metadata[]) appends events to one stream, and
-- append_one(stream, expected, id, type, data, metadata) one event (no arrays to build and take apart).
-- Each whole append is one call, in one round trip, in autocommit.
--
-- Global order. A reader pages with "WHERE position > last seen", so a row must never become visible
-- at a position below one a reader has already seen. Sequence values are handed out before commit, so
-- with concurrent writers that is not true by itself. Here every append takes one transaction-scoped
-- advisory lock (per schema) BEFORE it reads the stream version and draws its positions, and holds it
-- until its commit is visible (PostgreSQL releases locks after the commit is visible to snapshots).
-- Position order is therefore commit order, and a plain keyset read can never skip a row.
--
-- What it costs: appends to one schema run one at a time, from the lock to the end of the commit
-- (including the WAL flush). Concurrent write throughput is capped by that section: adding writers
-- does not add throughput, it adds waiting (measured here: ~the same events/s with 1 or 8 writers,
-- where raw INSERTs scale with group commit). Everything else (parsing the jsonb parameters, the
-- round trip, the client) happens outside it, and readers never wait for it.
--
-- Why an advisory lock and a sequence, not a counter row (UPDATE head SET position = position + n):
-- both serialise, but the counter row leaves one dead row version per append, which cannot be pruned
-- while any transaction in the database holds an old snapshot; with one long transaction open,
-- appends measured 2-5x slower and kept getting slower, while this stayed flat. The price: an append
-- that fails after drawing its positions (a duplicate event id) leaves a gap. Positions are never
-- reused and gaps are allowed by the contract; a version conflict is detected before any position is
-- drawn, so it leaves none.
--
-- Expected version: >= 0 exact, ${EXPECTED_ANY} any, ${EXPECTED_NO_STREAM} no stream, ${EXPECTED_STREAM_EXISTS} stream exists. It is checked
-- after the lock is taken, so inside the write. A conflict raises SQLSTATE ${VERSION_CONFLICT_SQLSTATE} with the actual
-- version as DETAIL. Call these in autocommit (the adapter does): inside a longer transaction the lock,
-- and so every other writer, waits for that transaction to end.
${appendFunctions(s, rawSchema, { replace: false, notify: false })}`,
};

const checkpointsAndLeasesMigration: PostgresMigration = {
  version: 2,
  name: 'checkpoints_and_leases',
  sql: (s) => `
-- One row per subscription. position is NULL while a leader has claimed the row but never saved;
-- fencing_token is the newest token that claimed or saved it (0: never fenced). Writes carrying an
-- older token are refused (see postgres-checkpoint-store.ts).
CREATE TABLE ${s}.checkpoints (
  name text PRIMARY KEY,
  position bigint NULL,
  fencing_token bigint NOT NULL DEFAULT 0,
  updated_at timestamptz NOT NULL
);

-- One row per lock name of PostgresLockRegistry: the last fencing token handed out, and who took it when.
-- Who holds the lock now is the advisory lock itself (pg_locks), not this row: the row only makes the
-- token grow across holders, processes and restarts.
CREATE TABLE ${s}.leases (
  name text PRIMARY KEY,
  fencing_token bigint NOT NULL,
  holder text,
  acquired_at timestamptz
);
`,
};

const appendNotifyMigration: PostgresMigration = {
  version: 3,
  name: 'append_notify',
  // Same functions as version 1, plus the wake-up: listeners of other processes hear of an append on
  // commit instead of at their next poll. The bodies are replaced, the signatures are unchanged.
  sql: (s, rawSchema) => appendFunctions(s, rawSchema, { replace: true, notify: true }),
};

const deadLettersAndCompletionsMigration: PostgresMigration = {
  version: 4,
  name: 'dead_letters_and_completions',
  sql: (s) => `
-- The dead-letter queue (postgres-dead-letter-store.ts). Ids are UUIDv7, so id order is creation
-- order. payload is the to-do item's payload ('null' for none); attempts is a JSON array of
-- {at: milliseconds, error}. Times are the server's clock, to the millisecond. No CHECK on stage, so a
-- new stage needs no constraint change. The index serves what the leading node polls (its source's
-- letters in 'redrive', oldest first) and an operator's redrive or count of one source.
CREATE TABLE ${s}.dead_letters (
  id uuid NOT NULL,
  source text NOT NULL,
  stage text NOT NULL,
  key text NOT NULL,
  payload jsonb NOT NULL,
  event_id uuid NOT NULL,
  event_type text NOT NULL,
  event_position bigint NOT NULL,
  stream_id text NOT NULL,
  attempts jsonb NOT NULL,
  status text NOT NULL,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  CONSTRAINT dead_letters_pkey PRIMARY KEY (id),
  CONSTRAINT dead_letters_status_check CHECK (status IN ('dead', 'redrive'))
);
CREATE INDEX dead_letters_source_status_id ON ${s}.dead_letters (source, status, id);

-- Which to-do items of an automation have run (postgres-completion-store.ts). Only ever looked up and
-- pruned by (source, position) ranges, which the primary key serves.
CREATE TABLE ${s}.completions (
  source text NOT NULL,
  position bigint NOT NULL,
  item_id text NOT NULL,
  CONSTRAINT completions_pkey PRIMARY KEY (source, position, item_id)
);
`,
};

const leaseTokensMigration: PostgresMigration = {
  version: 5,
  name: 'lease_tokens',
  sql: (s) => `
-- PostgresLockRegistry's fencing tokens: one sequence per schema, drawn once per granted lock. A token only
-- has to grow with every new holder of a name; a sequence does that for every name at once without a
-- row to update (and vacuum) per acquire. It starts above every token handed out or claimed so far.
-- The leases table stays for nodes of older versions during a rolling deploy; their tokens can be
-- lower than the sequence's, so such a node is fenced (and stands by) after a newer one took over.
CREATE SEQUENCE ${s}.lease_tokens AS bigint MINVALUE 1;
SELECT setval('${s}.lease_tokens', GREATEST((SELECT max(fencing_token) FROM ${s}.leases), (SELECT max(fencing_token) FROM ${s}.checkpoints), 0) + 1, false);
`,
};

const runnerStatusMigration: PostgresMigration = {
  version: 6,
  name: 'runner_status',
  sql: (s) => `
-- What each running subscription, automation and view publishes about itself (postgres-runner-status.ts):
-- one row per (name, node), rewritten on every change and on a heartbeat. heartbeat_at is the server's
-- clock; a running row not rewritten within 3 x heartbeat_ms is stale. The work columns are an
-- automation's to-do list (NULL for the others). No CHECK on kind, state or role, so a new value needs
-- no constraint change.
CREATE TABLE ${s}.runner_status (
  name text NOT NULL,
  node_id text NOT NULL,
  kind text NOT NULL,
  state text NOT NULL,
  role text NOT NULL,
  fencing_token bigint,
  position bigint,
  handled bigint NOT NULL,
  last_position bigint,
  last_handled_at timestamptz,
  pending integer,
  running integer,
  hung integer,
  retrying integer,
  unrecorded integer,
  oldest_pending_ms bigint,
  last_error text,
  heartbeat_ms integer NOT NULL,
  heartbeat_at timestamptz NOT NULL,
  CONSTRAINT runner_status_pkey PRIMARY KEY (name, node_id)
);
`,
};

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
function appendGroupFunction(s: string, rawSchema: string): string {
  const [lockClass, lockObject] = advisoryKey('append', rawSchema);
  return `
CREATE FUNCTION ${s}.append_group(
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
  SELECT array_agg(coalesce((SELECT e.stream_version FROM ${s}.events e WHERE e.stream_id = g.stream_id
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
    IF NOT (expected = ${EXPECTED_ANY} OR expected = actual
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

/**
 * `append_one` again, same signature, in two statements instead of four: the version is looked up, the
 * position drawn and the row written by one INSERT (its snapshot is taken after the lock is granted, as
 * the lookup's was), and only a refused append looks the version up again, for its error. Each
 * statement of a plpgsql function is an executor run of its own; this is the path of every lone
 * one-event append.
 */
function fasterAppendOne(s: string, rawSchema: string): string {
  const [lockClass, lockObject] = advisoryKey('append', rawSchema);
  return `
CREATE OR REPLACE FUNCTION ${s}.append_one(
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
BEGIN
  PERFORM pg_advisory_xact_lock(${lockClass}, ${lockObject});
  INSERT INTO ${s}.events (position, id, stream_id, stream_version, type, data, metadata, created_at)
  SELECT nextval('${s}.events_position'), p_id, p_stream_id, v.version + 1, p_type, p_data, p_metadata, clock_timestamp()
    FROM (SELECT coalesce(max(e.stream_version), 0) AS version FROM ${s}.events e WHERE e.stream_id = p_stream_id) AS v
   WHERE p_expected = ${EXPECTED_ANY} OR p_expected = v.version
      OR (p_expected = ${EXPECTED_NO_STREAM} AND v.version = 0) OR (p_expected = ${EXPECTED_STREAM_EXISTS} AND v.version > 0)
  RETURNING position, stream_version, created_at INTO first_position, last_version, written_at;
  IF NOT FOUND THEN
    -- Still under the lock: the version that refused the append is the one reported.
    SELECT coalesce(max(e.stream_version), 0) INTO actual FROM ${s}.events e WHERE e.stream_id = p_stream_id;
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

const appendGroupMigration: PostgresMigration = {
  version: 7,
  name: 'append_group',
  sql: (s, rawSchema) => appendGroupFunction(s, rawSchema) + fasterAppendOne(s, rawSchema),
};

/** Every step, in order. Later adapters' tables are added here as new versions. */
export const POSTGRES_MIGRATIONS: readonly PostgresMigration[] = [
  eventsMigration,
  checkpointsAndLeasesMigration,
  appendNotifyMigration,
  deadLettersAndCompletionsMigration,
  leaseTokensMigration,
  runnerStatusMigration,
  appendGroupMigration,
];

/**
 * Brings `schema` up to the latest version, creating it if needed. Safe to call from several processes
 * at once: each step runs in a transaction that first takes an advisory lock derived from the schema
 * name, then re-checks whether the step is still missing. Returns the versions this call applied.
 *
 * A database migrated further by a newer eskit is left as it is (steps only add), so old and new
 * processes can run side by side during a rolling deploy.
 */
export async function migratePostgres(
  pool: pg.Pool,
  schema: string,
  migrations: readonly PostgresMigration[] = POSTGRES_MIGRATIONS,
): Promise<number[]> {
  quoteSchema(schema);
  assertOrdered(migrations);
  let client: pg.PoolClient;
  try {
    client = await pool.connect();
  } catch (cause) {
    // Not a migration problem: the same failure as any other first call, so the same error.
    throw connectionFailure(cause, pool) ?? new MigrationError(`Could not connect to PostgreSQL to migrate schema "${schema}": ${describe(cause)}`, { cause });
  }
  const stopHearing = hearWhileCheckedOut(client);
  try {
    return await migrateOnClient(client, schema, migrations);
  } finally {
    stopHearing();
    client.release();
  }
}

/**
 * `migratePostgres` on a connection the caller holds (not inside a transaction of its own): the lock
 * registry migrates on its dedicated connection rather than opening a pool for it.
 */
export async function migrateOnClient(
  client: pg.ClientBase,
  schema: string,
  migrations: readonly PostgresMigration[] = POSTGRES_MIGRATIONS,
): Promise<number[]> {
  const s = quoteSchema(schema);
  assertOrdered(migrations);
  const [lockClass, lockObject] = advisoryKey('migrate', schema);
  const applied: number[] = [];
  // Fast path, without a lock or a write: everything is there already (the usual case).
  if ((await pendingVersions(client, schema, s, migrations)).length === 0) return applied;
  for (const migration of migrations) {
    await client.query('BEGIN');
    try {
      await client.query('SELECT pg_advisory_xact_lock($1, $2)', [lockClass, lockObject]);
      // Under the lock, and with a fresh snapshot: another process may have just done this step.
      const pending = await pendingVersions(client, schema, s, migrations, true);
      if (pending.includes(migration.version)) {
        await client.query(migration.sql(s, schema));
        await client.query(`INSERT INTO ${s}.migrations (version, name) VALUES ($1, $2)`, [migration.version, migration.name]);
        applied.push(migration.version);
      }
      await client.query('COMMIT');
    } catch (cause) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw new MigrationError(
        `Migration ${migration.version} (${migration.name}) of schema "${schema}" failed and was rolled back: ${describe(cause)}. ` +
          'Fix the cause (often permissions: the role needs CREATE on the database or schema), then call migrate() again.',
        { cause },
      );
    }
  }
  return applied;
}

async function pendingVersions(
  client: pg.ClientBase,
  schema: string,
  s: string,
  migrations: readonly PostgresMigration[],
  create = false,
): Promise<number[]> {
  // Plain queries on the catalogs, not to_regclass(): name lookups go through a cache that is not
  // refreshed by waiting on an advisory lock, so they could miss what the previous holder created.
  const exists = await client.query<{ has_schema: boolean; has_table: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1) AS has_schema,
            EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = $1 AND c.relname = 'migrations') AS has_table`,
    [schema],
  );
  const { has_schema: hasSchema, has_table: hasTable } = exists.rows[0] ?? { has_schema: false, has_table: false };
  if (!hasTable) {
    if (!create) return migrations.map((m) => m.version);
    // Not CREATE SCHEMA IF NOT EXISTS: it demands CREATE on the database even when the schema exists.
    if (!hasSchema) await client.query(`CREATE SCHEMA ${s}`);
    await client.query(
      `CREATE TABLE ${s}.migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
    );
    return migrations.map((m) => m.version);
  }
  const done = await client.query<{ version: number }>(`SELECT version FROM ${s}.migrations`);
  const have = new Set(done.rows.map((r) => r.version));
  return migrations.filter((m) => !have.has(m.version)).map((m) => m.version);
}

function assertOrdered(migrations: readonly PostgresMigration[]): void {
  migrations.forEach((m, index) => {
    if (m.version !== index + 1) {
      throw new MigrationError(`Migration versions must be 1, 2, 3, ... in order; found ${m.version} at index ${index} (${m.name}).`);
    }
  });
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
