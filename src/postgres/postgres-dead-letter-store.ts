import type pg from 'pg';
import { v7 as uuidv7 } from 'uuid';
import type { FencedWriteOptions, WriteFence } from '../core/checkpoint.js';
import {
  assertFenceHolds,
  checkDeadLetterCountQuery,
  checkDeadLetterId,
  checkDeadLetterQuery,
  checkFence,
  checkNewDeadLetter,
  checkOutcome,
  checkSelector,
  decodeDeadLetter,
} from '../core/dead-letter-checks.js';
import type { CheckedSelector, StoredDeadLetterRow } from '../core/dead-letter-checks.js';
import type { DeadLetter, DeadLetterQuery, DeadLetterSelector, DeadLetterStore, FailedAttempt, NewDeadLetter } from '../core/dead-letter.js';
import { InvalidArgumentError, SerializationError } from '../core/errors.js';
import { PostgresTableAccess } from './table-access.js';
import type { PostgresTableOptions } from './table-access.js';
import { quoteSchema } from './schema.js';

/** Where a dead-letter or completion store finds its tables: as for `PostgresCheckpointStore`. */
export type PostgresDeadLetterStoreOptions = PostgresTableOptions;

// Text PostgreSQL cannot hold: NUL, and lone surrogates (the driver would silently turn them into U+FFFD).
// eslint-disable-next-line no-control-regex -- NUL is exactly what this looks for
const UNSTORABLE_TEXT = /\u0000|\p{Cs}/u;

/** True when `text` could never have been stored, so a lookup by it finds nothing. */
export function unstorableText(text: string): boolean {
  return UNSTORABLE_TEXT.test(text);
}

/** Refuses, before any query, text that a text column cannot store. */
export function assertStorableText(text: string, what: string): void {
  if (UNSTORABLE_TEXT.test(text)) {
    throw new InvalidArgumentError(`${what} contains U+0000 or a lone UTF-16 surrogate, which PostgreSQL text cannot store; nothing was stored.`);
  }
}

/**
 * The fence of a leader's write, checked (and refused, like any text PostgreSQL cannot store, when its
 * checkpoint name holds NUL or a lone surrogate: no leader can have claimed such a checkpoint).
 */
export function checkPostgresFence(options: unknown): WriteFence | undefined {
  const fence = checkFence(options);
  if (fence !== undefined) assertStorableText(fence.checkpoint, 'fence.checkpoint');
  return fence;
}

/**
 * The CTE a fenced write starts with: the token of the checkpoint named by the parameter `name` (such as
 * '$11'), with its row locked FOR SHARE.
 * A claim or save of that checkpoint (an upsert, which locks the row for update) waits for the write's
 * transaction to end, and a write that comes while an upsert is uncommitted waits for it and then reads
 * the committed token (READ COMMITTED re-reads a row it locks). So a claim is ordered with the write:
 * the write lands before the claim, and the new leader sees it; or it sees the claim and is fenced.
 * Without a row, nobody claimed the checkpoint, and the write goes through (a first claim, which
 * inserts the row, is not ordered with a write that races it; a leader claims before it writes).
 */
export function fenceCte(schema: string, name: string): string {
  return `fence AS MATERIALIZED (SELECT fencing_token FROM ${quoteSchema(schema)}.checkpoints WHERE name = ${name} FOR SHARE)`;
}

/** The condition that gates a fenced write: no token newer than the parameter `token` holds the checkpoint. */
export function fenceHolds(token: string): string {
  return `NOT EXISTS (SELECT FROM fence WHERE fencing_token > ${token}::bigint)`;
}

/** Throws `FencedError` when the token a fenced statement returned (bigint as text; null: no row) is newer than the fence's. */
export function assertFenceHoldsFor(fence: WriteFence, token: unknown): void {
  assertFenceHolds(fence, token === null || token === undefined ? undefined : Number(token));
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

// Times are the server's clock, cut to the millisecond: what is stored is exactly what callers get.
const NOW = "date_trunc('milliseconds', clock_timestamp())";
const MILLIS = (column: string): string => `round(extract(epoch FROM ${column}) * 1000)::bigint`;
const COLUMNS = `id, source, stage, key, payload::text, event_id, event_type, event_position, stream_id, attempts::text, status,
  ${MILLIS('created_at')}, ${MILLIS('updated_at')}`;

type Filter = { source: string | undefined; status: string | undefined; afterId?: string | undefined; newestFirst?: boolean };

interface Statements {
  add: pg.QueryArrayConfig;
  /** As `add`, with the fence ($11 checkpoint, $12 token): returns the checkpoint's token, then created_at (null when fenced). */
  addFenced: pg.QueryArrayConfig;
  get: pg.QueryArrayConfig;
  redriveById: pg.QueryArrayConfig;
  redriveBySource: pg.QueryArrayConfig;
  settleOk: pg.QueryArrayConfig;
  settleFailed: pg.QueryArrayConfig;
  /** As the settlements, with the fence (checkpoint and token after the other parameters): return the checkpoint's token. */
  settleOkFenced: pg.QueryArrayConfig;
  settleFailedFenced: pg.QueryArrayConfig;
  discardById: pg.QueryArrayConfig;
  discardBySource: pg.QueryArrayConfig;
  /** One per combination of filters, made on first use: a filter left out is left out of the SQL, so each uses the index. */
  lists: Map<string, pg.QueryArrayConfig>;
  counts: Map<string, pg.QueryArrayConfig>;
}

// Prepared per schema (the name says which), shared by every dead-letter store of the process.
const cache = new Map<string, Statements>();

function statementName(schema: string, what: string): string {
  return `eskit.${schema}.dead_letters_${what}`;
}

function statements(schema: string): Statements {
  let cached = cache.get(schema);
  if (cached) return cached;
  const s = quoteSchema(schema);
  const statement = (what: string, text: string): pg.QueryArrayConfig => ({ name: statementName(schema, what), rowMode: 'array', text });
  const insert = `INSERT INTO ${s}.dead_letters
         (id, source, stage, key, payload, event_id, event_type, event_position, stream_id, attempts, status, created_at, updated_at)
       SELECT $1::uuid, $2::text, $3::text, $4::text, $5::jsonb, $6::uuid, $7::text, $8::bigint, $9::text, $10::jsonb, 'dead', t.at, t.at
         FROM (SELECT ${NOW} AS at) t`;
  const settleOk = `DELETE FROM ${s}.dead_letters WHERE id = $1 AND status = 'redrive'`;
  const settleFailed = `UPDATE ${s}.dead_letters SET status = 'dead', attempts = attempts || $2::jsonb, updated_at = ${NOW} WHERE id = $1 AND status = 'redrive'`;
  cached = {
    // A SELECT rather than VALUES, so that created_at and updated_at are one reading of the clock.
    add: statement('add', `${insert} RETURNING ${MILLIS('created_at')}`),
    addFenced: statement(
      'add_fenced',
      `WITH ${fenceCte(schema, '$11')}, added AS (${insert} WHERE ${fenceHolds('$12')} RETURNING created_at)
       SELECT (SELECT fencing_token FROM fence), (SELECT ${MILLIS('created_at')} FROM added)`,
    ),
    get: statement('get', `SELECT ${COLUMNS} FROM ${s}.dead_letters WHERE id = $1`),
    redriveById: statement('redrive_id', `UPDATE ${s}.dead_letters SET status = 'redrive', updated_at = ${NOW} WHERE id = $1 AND status = 'dead'`),
    redriveBySource: statement(
      'redrive_source',
      `UPDATE ${s}.dead_letters SET status = 'redrive', updated_at = ${NOW} WHERE source = $1 AND status = 'dead'`,
    ),
    settleOk: statement('settle_ok', settleOk),
    // One statement, so reading the attempts and writing them back cannot interleave with a discard
    // or another settlement: a concurrent change makes PostgreSQL re-check the WHERE on the new row.
    settleFailed: statement('settle_failed', settleFailed),
    settleOkFenced: statement(
      'settle_ok_fenced',
      `WITH ${fenceCte(schema, '$2')}, settled AS (${settleOk} AND ${fenceHolds('$3')}) SELECT (SELECT fencing_token FROM fence)`,
    ),
    settleFailedFenced: statement(
      'settle_failed_fenced',
      `WITH ${fenceCte(schema, '$3')}, settled AS (${settleFailed} AND ${fenceHolds('$4')}) SELECT (SELECT fencing_token FROM fence)`,
    ),
    discardById: statement('discard_id', `DELETE FROM ${s}.dead_letters WHERE id = $1`),
    discardBySource: statement('discard_source', `DELETE FROM ${s}.dead_letters WHERE source = $1`),
    lists: new Map(),
    counts: new Map(),
  };
  cache.set(schema, cached);
  return cached;
}

/** The WHERE clause of a filter with its values, and a name for the statement (one per combination). */
function where(filter: Filter): { clause: string; values: string[]; name: string } {
  const conditions: string[] = [];
  const values: string[] = [];
  let name = '';
  const add = (condition: string, value: string, letter: string): void => {
    values.push(value);
    conditions.push(`${condition} $${values.length}`);
    name += letter;
  };
  if (filter.source !== undefined) add('source =', filter.source, 's');
  if (filter.status !== undefined) add('status =', filter.status, 't');
  if (filter.afterId !== undefined) add(filter.newestFirst === true ? 'id <' : 'id >', filter.afterId, 'a');
  if (filter.newestFirst === true) name += 'n';
  return { clause: conditions.length === 0 ? '' : `WHERE ${conditions.join(' AND ')}`, values, name: name || 'all' };
}

function listStatement(schema: string, filter: Filter): { statement: pg.QueryArrayConfig; values: string[] } {
  const { clause, values, name } = where(filter);
  const lists = statements(schema).lists;
  let statement = lists.get(name);
  if (!statement) {
    const text = `SELECT ${COLUMNS} FROM ${quoteSchema(schema)}.dead_letters ${clause} ORDER BY id${filter.newestFirst === true ? ' DESC' : ''} LIMIT $${values.length + 1}`;
    statement = { name: statementName(schema, `list_${name}`), rowMode: 'array', text };
    lists.set(name, statement);
  }
  return { statement, values };
}

function countStatement(schema: string, filter: Filter): { statement: pg.QueryArrayConfig; values: string[] } {
  const { clause, values, name } = where(filter);
  const counts = statements(schema).counts;
  let statement = counts.get(name);
  if (!statement) {
    const text = `SELECT count(*) FROM ${quoteSchema(schema)}.dead_letters ${clause}`;
    statement = { name: statementName(schema, `count_${name}`), rowMode: 'array', text };
    counts.set(name, statement);
  }
  return { statement, values };
}

/** A row as selected with COLUMNS (bigints arrive as text) into the shape the shared decoder reads. */
function decodeRow(row: unknown[]): DeadLetter {
  const [id, source, stage, key, payload, eventId, eventType, eventPosition, streamId, attempts, status, createdAt, updatedAt] = row;
  const stored: StoredDeadLetterRow = {
    id: id as string,
    source: source as string,
    stage: stage as string,
    key: key as string,
    payload: payload as string,
    eventId: eventId as string,
    eventType: eventType as string,
    eventPosition: Number(eventPosition),
    streamId: streamId as string,
    attempts: attempts as string,
    status: status as string,
    createdAt: Number(createdAt),
    updatedAt: Number(updatedAt),
  };
  return decodeDeadLetter(stored);
}

interface PgServerError {
  code: string;
  message: string;
}

function serverError(error: unknown): PgServerError | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const { code, message } = error as { code?: unknown; message?: unknown };
  return typeof code === 'string' && code.length === 5 && typeof message === 'string' ? (error as PgServerError) : undefined;
}

// An escaped NUL as JSON.stringify writes it, not preceded by an escaping backslash.
const ESCAPED_NUL = /(?<!\\)(?:\\\\)*\\u0000/;
// JSON.stringify writes paired surrogates as characters and escapes only lone ones.
const ESCAPED_LONE_SURROGATE = /(?<!\\)(?:\\\\)*\\ud[89a-f][0-9a-f]{2}/i;

/**
 * jsonb refuses what JSON allows in a string: \u0000 (22P05) and lone surrogates (22P02). Such a letter
 * is refused as a whole with a SerializationError naming the field; anything else is left to translateError.
 */
function jsonbRefusal(error: unknown, fields: ReadonlyArray<[what: string, json: string]>): SerializationError | undefined {
  const e = serverError(error);
  if (!e) return undefined;
  const nul = e.code === '22P05';
  if (!nul && !(e.code === '22P02' && /json/i.test(e.message))) return undefined;
  const pattern = nul ? ESCAPED_NUL : ESCAPED_LONE_SURROGATE;
  const where = fields.find(([, json]) => pattern.test(json))?.[0] ?? 'The dead letter';
  const what = nul ? 'the character U+0000 (NUL)' : 'a lone UTF-16 surrogate';
  return new SerializationError(where, {
    cause: error,
    reason:
      `${where} contains ${what} in a string, which PostgreSQL jsonb cannot store (${e.message}); nothing was stored. ` +
      'Remove or replace it first.',
  });
}

/**
 * The dead-letter queue in `<schema>.dead_letters`, next to the events. Every operation is one
 * statement in autocommit, so each is atomic across processes; a failed redrive's settlement appends
 * its attempts with jsonb `||` in the UPDATE itself, and only while the letter is still in 'redrive'
 * (a concurrent discard or settlement wins). Times are the server's clock, to the millisecond.
 *
 * PostgreSQL cannot store U+0000 or lone UTF-16 surrogates: in `source`, `key`, `eventType` or
 * `streamId` they are refused with ESKIT_INVALID_ARGUMENT, in the payload or an attempt's error with
 * ESKIT_SERIALIZATION; either way nothing is stored. `eventId` must be a UUID (as every event id is);
 * it is stored, and returned, in lower case.
 *
 * A fenced `add` or `settleRedrive` is still one statement: it reads the token of the fence's checkpoint
 * in `<schema>.checkpoints` (this store's schema) with the row locked FOR SHARE, and writes only if no
 * newer token holds it, so a concurrent claim is ordered with the write (see `fenceCte`).
 *
 * ```ts
 * const deadLetters = new PostgresDeadLetterStore({ store }); // shares the event store's pool and schema
 * ```
 */
export class PostgresDeadLetterStore implements DeadLetterStore {
  readonly #access: PostgresTableAccess;

  constructor(options: PostgresDeadLetterStoreOptions) {
    this.#access = new PostgresTableAccess(options, 'PostgresDeadLetterStore', 'dead-letter store');
  }

  get schema(): string {
    return this.#access.schema;
  }

  /** The pool the store runs on (yours, the event store's, or the one it created). */
  get pool(): pg.Pool {
    return this.#access.pool;
  }

  async add(letter: NewDeadLetter, options?: FencedWriteOptions): Promise<DeadLetter> {
    const checked = checkNewDeadLetter(letter);
    const fence = checkPostgresFence(options);
    if (!UUID.test(checked.eventId)) {
      throw new InvalidArgumentError(`eventId must be the id of the event (a UUID), got ${JSON.stringify(checked.eventId)}`);
    }
    assertStorableText(checked.source, 'source');
    assertStorableText(checked.key, 'key');
    assertStorableText(checked.eventType, 'eventType');
    assertStorableText(checked.streamId, 'streamId');
    const id = uuidv7();
    const eventId = checked.eventId.toLowerCase();
    const attempts = JSON.stringify(checked.attempts);
    const values = [id, checked.source, checked.stage, checked.key, checked.payload, eventId, checked.eventType, checked.eventPosition, checked.streamId, attempts];
    const fields: Array<[string, string]> = [
      ['The dead letter payload', checked.payload],
      ['An attempt error', attempts],
    ];
    const sql = statements(this.schema);
    let now: number;
    if (fence === undefined) {
      const result = await this.#access.query(sql.add, values, (error) => jsonbRefusal(error, fields));
      now = Number((result.rows[0] as unknown[])[0]);
    } else {
      const result = await this.#access.query(sql.addFenced, [...values, fence.checkpoint, fence.fencingToken], (error) => jsonbRefusal(error, fields));
      const [token, createdAt] = result.rows[0] as unknown[];
      assertFenceHoldsFor(fence, token);
      now = Number(createdAt);
    }
    return decodeDeadLetter({ ...checked, id, eventId, attempts, status: 'dead', createdAt: now, updatedAt: now });
  }

  async list(query?: DeadLetterQuery): Promise<DeadLetter[]> {
    const { limit, ...filter } = checkDeadLetterQuery(query);
    if (filter.source !== undefined && unstorableText(filter.source)) return [];
    const { statement, values } = listStatement(this.schema, filter);
    const result = await this.#access.query(statement, [...values, limit]);
    return result.rows.map(decodeRow);
  }

  async count(query?: Omit<DeadLetterQuery, 'limit' | 'afterId'>): Promise<number> {
    const filter = checkDeadLetterCountQuery(query);
    if (filter.source !== undefined && unstorableText(filter.source)) return 0;
    const { statement, values } = countStatement(this.schema, filter);
    const result = await this.#access.query(statement, values);
    return Number((result.rows[0] as unknown[])[0]);
  }

  async get(id: string): Promise<DeadLetter | undefined> {
    const key = checkDeadLetterId(id);
    const result = await this.#access.query(statements(this.schema).get, [key]);
    const row = result.rows[0];
    return row && decodeRow(row);
  }

  async redrive(selector: DeadLetterSelector): Promise<number> {
    const checked = checkSelector(selector);
    const sql = statements(this.schema);
    return this.#bySelector(checked, sql.redriveById, sql.redriveBySource);
  }

  async settleRedrive(id: string, outcome: { ok: true } | { ok: false; attempts: FailedAttempt[] }, options?: FencedWriteOptions): Promise<void> {
    const key = checkDeadLetterId(id);
    const checked = checkOutcome(outcome);
    const fence = checkPostgresFence(options);
    const sql = statements(this.schema);
    const fenceValues = fence === undefined ? [] : [fence.checkpoint, fence.fencingToken];
    let result: pg.QueryArrayResult;
    if (checked.ok) {
      result = await this.#access.query(fence === undefined ? sql.settleOk : sql.settleOkFenced, [key, ...fenceValues]);
    } else {
      const attempts = JSON.stringify(checked.attempts);
      result = await this.#access.query(fence === undefined ? sql.settleFailed : sql.settleFailedFenced, [key, attempts, ...fenceValues], (error) =>
        jsonbRefusal(error, [['An attempt error', attempts]]),
      );
    }
    if (fence !== undefined) assertFenceHoldsFor(fence, (result.rows[0] as unknown[])[0]);
  }

  async discard(selector: DeadLetterSelector): Promise<number> {
    const checked = checkSelector(selector);
    const sql = statements(this.schema);
    return this.#bySelector(checked, sql.discardById, sql.discardBySource);
  }

  /** Ends the pool if this store created it (from `connectionString`); later calls fail with ESKIT_STORE_CLOSED. Safe to call twice. */
  async close(): Promise<void> {
    await this.#access.close();
  }

  async #bySelector(selector: CheckedSelector, byId: pg.QueryArrayConfig, bySource: pg.QueryArrayConfig): Promise<number> {
    if (selector.id !== undefined) return (await this.#access.query(byId, [selector.id])).rowCount ?? 0;
    // No letter can have a source PostgreSQL cannot store.
    if (unstorableText(selector.source)) return 0;
    return (await this.#access.query(bySource, [selector.source])).rowCount ?? 0;
  }
}
