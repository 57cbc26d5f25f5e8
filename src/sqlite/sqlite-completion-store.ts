import type Database from 'better-sqlite3';
import type { FencedWriteOptions } from '../core/checkpoint.js';
import { assertFenceHolds, checkCompletedItems, checkFence, checkPosition, checkSource, completionId } from '../core/dead-letter-checks.js';
import type { CompletedItem, TransactionalCompletionStore } from '../core/dead-letter.js';
import { InvalidArgumentError } from '../core/errors.js';
import { SqliteHandle } from './handle.js';
import type { SqliteOwnedConnectionOptions } from './handle.js';

export type SqliteCompletionStoreOptions = SqliteOwnedConnectionOptions;

interface Statements {
  insert: Database.Statement<[string, number, string]>;
  after: Database.Statement<[string, number], [number, string]>;
  prune: Database.Statement<[string, number]>;
  fenceToken: Database.Statement<[string], number>;
}

/**
 * Completion records in the `eskit_completions` table, keyed (source, position, item_id). A batch is
 * recorded in one `BEGIN IMMEDIATE` transaction (all or nothing); reads and prunes are one statement.
 * A fenced batch reads the token of the fence's checkpoint in `eskit_checkpoints` first, in that same
 * transaction: a claim on any connection to the file comes wholly before it (and fences it) or after it.
 */
export class SqliteCompletionStore implements TransactionalCompletionStore<Database.Database> {
  readonly #handle: SqliteHandle;
  #statements: Statements | undefined;

  constructor(options: SqliteCompletionStoreOptions) {
    this.#handle = new SqliteHandle(options, 'SqliteCompletionStore', 'completion store');
  }

  /** The connection the records live on (an event store's, the handle you passed, or its own file's). */
  get database(): Database.Database {
    return this.#handle.database;
  }

  async markCompleted(source: string, items: ReadonlyArray<{ position: number; itemId: string }>, options?: FencedWriteOptions): Promise<void> {
    checkSource(source);
    const checked = checkCompletedItems(items);
    const fence = checkFence(options);
    if (checked.length === 0 && fence === undefined) return;
    this.#handle.run(`record ${checked.length} completion(s) of "${source}"`, () => {
      const { insert, fenceToken } = this.#prepared();
      this.database
        .transaction(() => {
          // A FencedError rolls the transaction back before any item is written.
          if (fence !== undefined) assertFenceHolds(fence, fenceToken.get(fence.checkpoint));
          for (const { position, itemId } of checked) insert.run(source, position, itemId);
        })
        .immediate();
    });
  }

  /**
   * Runs `work` with the database in a transaction that also records `item` (fenced), and commits both,
   * or neither. `work` must be synchronous, as better-sqlite3 transactions are: a promise it returns is
   * refused (and rolled back). For an automation's side effects in this file, through `inTransaction`:
   *
   * ```ts
   * const completions = new SqliteCompletionStore({ store });
   * execute: inTransaction(completions, (item, database) => {
   *   database.prepare('INSERT INTO shipments (order_id) VALUES (?)').run(item.payload.orderId);
   * }),
   * ```
   */
  async completeWithin<T>(source: string, item: CompletedItem | undefined, work: (database: Database.Database) => T, options?: FencedWriteOptions): Promise<Awaited<T>> {
    checkSource(source);
    const checked = item === undefined ? [] : checkCompletedItems([item]);
    const fence = checkFence(options);
    return this.#handle.run(`run a side effect and record the completion of "${source}"`, () => {
      const { insert, fenceToken } = this.#prepared();
      return this.database
        .transaction(() => {
          const result = work(this.database);
          if (typeof (result as { then?: unknown } | null)?.then === 'function') {
            (result as PromiseLike<unknown>).then(undefined, () => undefined);
            throw new InvalidArgumentError(
              'On SQLite the work of completeWithin (an execute inTransaction) must be synchronous, as better-sqlite3 transactions are: ' +
                'write with the database it gets, without await. Nothing was committed.',
            );
          }
          // A FencedError rolls the side effect's writes back with it.
          if (fence !== undefined) assertFenceHolds(fence, fenceToken.get(fence.checkpoint));
          for (const { position, itemId } of checked) insert.run(source, position, itemId);
          return result as Awaited<T>;
        })
        .immediate();
    });
  }

  async completedAfter(source: string, position: number): Promise<Set<string>> {
    checkSource(source);
    checkPosition(position);
    const rows = this.#handle.run(`read the completions of "${source}"`, () => this.#prepared().after.all(source, position));
    return new Set(rows.map(([at, itemId]) => completionId(at, itemId)));
  }

  async prune(source: string, position: number): Promise<void> {
    checkSource(source);
    checkPosition(position);
    this.#handle.run(`prune the completions of "${source}"`, () => this.#prepared().prune.run(source, position));
  }

  /** Stops using the connection; closes it when the store opened it (from `path`). Safe to call twice. */
  async close(): Promise<void> {
    this.#handle.close();
  }

  /** Prepared on first use (see SqliteDeadLetterStore); safeIntegers(false): a shared handle may default to BigInt. */
  #prepared(): Statements {
    this.#statements ??= {
      insert: this.database
        .prepare<[string, number, string]>('INSERT INTO eskit_completions (source, position, item_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING')
        .safeIntegers(false),
      after: this.database
        .prepare<[string, number], [number, string]>('SELECT position, item_id FROM eskit_completions WHERE source = ? AND position > ?')
        .raw()
        .safeIntegers(false),
      prune: this.database.prepare<[string, number]>('DELETE FROM eskit_completions WHERE source = ? AND position <= ?').safeIntegers(false),
      fenceToken: this.database.prepare<[string], number>('SELECT fencing_token FROM eskit_checkpoints WHERE name = ?').pluck().safeIntegers(false),
    };
    return this.#statements;
  }
}
