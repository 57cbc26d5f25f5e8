import type Database from 'better-sqlite3';
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
  decodeAttempts,
  decodeDeadLetter,
} from '../core/dead-letter-checks.js';
import type { StoredAttempt, StoredDeadLetterRow } from '../core/dead-letter-checks.js';
import type { DeadLetter, DeadLetterQuery, DeadLetterSelector, DeadLetterStore, FailedAttempt, NewDeadLetter } from '../core/dead-letter.js';
import { SqliteHandle } from './handle.js';
import type { SqliteOwnedConnectionOptions } from './handle.js';

export type SqliteDeadLetterStoreOptions = SqliteOwnedConnectionOptions;

type Statement<P extends unknown[] = unknown[], R = unknown> = Database.Statement<P, R>;
type Filter = { source: string | undefined; status: string | undefined; afterId?: string | undefined; newestFirst?: boolean };

const COLUMNS = `id, source, stage, key, payload, event_id AS eventId, event_type AS eventType, event_position AS eventPosition,
  stream_id AS streamId, attempts, status, created_at AS createdAt, updated_at AS updatedAt`;

/**
 * The dead-letter queue in the `eskit_dead_letters` table, next to the events. Every operation is a
 * single statement, except a failed redrive's settlement (read the attempts, append, write back),
 * which is one `BEGIN IMMEDIATE` transaction: processes sharing the file see each operation whole.
 * Times are this process's clock, in milliseconds.
 *
 * A fenced `add` or `settleRedrive` reads the token of the fence's checkpoint in `eskit_checkpoints`
 * and writes in one `BEGIN IMMEDIATE` transaction: SQLite runs one writer at a time, so a claim on any
 * connection to the file either committed before (and the write is fenced) or waits until after it.
 */
export class SqliteDeadLetterStore implements DeadLetterStore {
  readonly #handle: SqliteHandle;
  readonly #statements = new Map<string, Statement>();

  constructor(options: SqliteDeadLetterStoreOptions) {
    this.#handle = new SqliteHandle(options, 'SqliteDeadLetterStore', 'dead-letter store');
  }

  /** The connection the letters live on (an event store's, the handle you passed, or its own file's). */
  get database(): Database.Database {
    return this.#handle.database;
  }

  async add(letter: NewDeadLetter, options?: FencedWriteOptions): Promise<DeadLetter> {
    const checked = checkNewDeadLetter(letter);
    const fence = checkFence(options);
    const now = Date.now();
    const row: StoredDeadLetterRow = { ...checked, id: uuidv7(), attempts: JSON.stringify(checked.attempts), status: 'dead', createdAt: now, updatedAt: now };
    this.#handle.run(`store a dead letter of "${checked.source}"`, () => {
      const insert = this.#statement(
        'add',
        `INSERT INTO eskit_dead_letters
           (id, source, stage, key, payload, event_id, event_type, event_position, stream_id, attempts, status, created_at, updated_at)
         VALUES (:id, :source, :stage, :key, :payload, :eventId, :eventType, :eventPosition, :streamId, :attempts, :status, :createdAt, :updatedAt)`,
      );
      if (fence === undefined) insert.run(row);
      else this.#fenced(fence, () => insert.run(row));
    });
    return decodeDeadLetter(row);
  }

  async list(query?: DeadLetterQuery): Promise<DeadLetter[]> {
    const { limit, ...filter } = checkDeadLetterQuery(query);
    const [where, name] = whereClause(filter);
    const rows = this.#handle.run('list dead letters', () =>
      this.#statement(`list${name}`, `SELECT ${COLUMNS} FROM eskit_dead_letters ${where} ORDER BY id${filter.newestFirst ? ' DESC' : ''} LIMIT :limit`).all({ ...bindings(filter), limit }),
    ) as StoredDeadLetterRow[];
    return rows.map(decodeDeadLetter);
  }

  async count(query?: Omit<DeadLetterQuery, 'limit' | 'afterId'>): Promise<number> {
    const filter = checkDeadLetterCountQuery(query);
    const [where, name] = whereClause(filter);
    return this.#handle.run('count dead letters', () =>
      this.#statement(`count${name}`, `SELECT COUNT(*) FROM eskit_dead_letters ${where}`, true).get(bindings(filter)),
    ) as number;
  }

  async get(id: string): Promise<DeadLetter | undefined> {
    const key = checkDeadLetterId(id);
    const row = this.#handle.run(`read dead letter ${key}`, () =>
      this.#statement('get', `SELECT ${COLUMNS} FROM eskit_dead_letters WHERE id = ?`).get(key),
    ) as StoredDeadLetterRow | undefined;
    return row && decodeDeadLetter(row);
  }

  async redrive(selector: DeadLetterSelector): Promise<number> {
    const checked = checkSelector(selector);
    const column = checked.id === undefined ? 'source' : 'id';
    return this.#handle.run(`mark dead letters of ${describe(checked)} for redrive`, () =>
      this.#statement(
        `redrive-${column}`,
        `UPDATE eskit_dead_letters SET status = 'redrive', updated_at = :now WHERE ${column} = :value AND status = 'dead'`,
      ).run({ value: checked.id ?? checked.source, now: Date.now() }),
    ).changes;
  }

  async settleRedrive(id: string, outcome: { ok: true } | { ok: false; attempts: FailedAttempt[] }, options?: FencedWriteOptions): Promise<void> {
    const key = checkDeadLetterId(id);
    const checked = checkOutcome(outcome);
    const fence = checkFence(options);
    this.#handle.run(`settle the redrive of dead letter ${key}`, () => {
      if (checked.ok) {
        const remove = this.#statement('settle-ok', "DELETE FROM eskit_dead_letters WHERE id = ? AND status = 'redrive'");
        if (fence === undefined) remove.run(key);
        else this.#fenced(fence, () => remove.run(key));
        return;
      }
      const read = this.#statement('settle-read', "SELECT attempts FROM eskit_dead_letters WHERE id = ? AND status = 'redrive'", true);
      const write = this.#statement(
        'settle-failed',
        "UPDATE eskit_dead_letters SET status = 'dead', attempts = :attempts, updated_at = :now WHERE id = :id AND status = 'redrive'",
      );
      // Immediate: the write lock is taken before the read, so no other process can discard or settle in between.
      this.#fenced(fence, () => {
        const stored = read.get(key) as string | undefined;
        if (stored === undefined) return;
        const previous = decodeAttempts(stored, key).map((a): StoredAttempt => ({ at: a.at.getTime(), error: a.error }));
        write.run({ id: key, attempts: JSON.stringify([...previous, ...checked.attempts]), now: Date.now() });
      });
    });
  }

  async discard(selector: DeadLetterSelector): Promise<number> {
    const checked = checkSelector(selector);
    const column = checked.id === undefined ? 'source' : 'id';
    return this.#handle.run(`discard dead letters of ${describe(checked)}`, () =>
      this.#statement(`discard-${column}`, `DELETE FROM eskit_dead_letters WHERE ${column} = ?`).run(checked.id ?? checked.source),
    ).changes;
  }

  /** Stops using the connection; closes it when the store opened it (from `path`). Safe to call twice. */
  async close(): Promise<void> {
    this.#handle.close();
  }

  /**
   * Runs `write` in one `BEGIN IMMEDIATE` transaction (a savepoint inside a caller's), after checking
   * `fence` in it: a `FencedError` rolls it back before anything is written.
   */
  #fenced(fence: WriteFence | undefined, write: () => void): void {
    const token = fence && this.#statement('fence-token', 'SELECT fencing_token FROM eskit_checkpoints WHERE name = ?', true);
    this.database
      .transaction(() => {
        if (fence !== undefined) assertFenceHolds(fence, token?.get(fence.checkpoint) as number | undefined);
        write();
      })
      .immediate();
  }

  /**
   * Prepared on first use, not in the constructor, so a store created with `migrate: false` reports the
   * missing tables on its first call. safeIntegers(false): a shared handle may default to BigInt.
   */
  #statement(name: string, sql: string, pluck = false): Statement {
    let statement = this.#statements.get(name);
    if (statement === undefined) {
      statement = this.database.prepare(sql).safeIntegers(false);
      if (pluck) statement.pluck();
      this.#statements.set(name, statement);
    }
    return statement;
  }
}

/** The WHERE clause for a filter, and a name for the statement it makes (one per combination). */
function whereClause(filter: Filter): [string, string] {
  const conditions: string[] = [];
  if (filter.source !== undefined) conditions.push('source = :source');
  if (filter.status !== undefined) conditions.push('status = :status');
  if (filter.afterId !== undefined) conditions.push(filter.newestFirst === true ? 'id < :afterId' : 'id > :afterId');
  const name = `(${filter.source === undefined ? '' : 's'}${filter.status === undefined ? '' : 't'}${filter.afterId === undefined ? '' : 'a'}${filter.newestFirst === true ? 'n' : ''})`;
  return [conditions.length === 0 ? '' : `WHERE ${conditions.join(' AND ')}`, name];
}

/** Only the filters given: better-sqlite3 cannot bind undefined. */
function bindings(filter: Filter): Record<string, string> {
  const out: Record<string, string> = {};
  if (filter.source !== undefined) out.source = filter.source;
  if (filter.status !== undefined) out.status = filter.status;
  if (filter.afterId !== undefined) out.afterId = filter.afterId;
  return out;
}

function describe(selector: { id?: string | undefined; source?: string | undefined }): string {
  return selector.id === undefined ? `"${selector.source}"` : `id ${selector.id}`;
}
