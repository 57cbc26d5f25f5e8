import type { FencedWriteOptions } from '../core/checkpoint.js';
import type { CompletedItem, CompletionStore, TransactionalCompletionStore } from '../core/dead-letter.js';
import { InvalidArgumentError } from '../core/errors.js';
import type { ExecuteContext } from './attempt.js';
import type { TodoItem } from './todo-items.js';


const TRANSACTIONAL: unique symbol = Symbol.for('eskit.transactional-execute');

/**
 * An automation's side effect that runs inside the transaction recording its item's completion: made by
 * `inTransaction`, given as the automation's `execute`.
 */
export interface TransactionalExecute<P> {
  readonly [TRANSACTIONAL]: true;
  /** The store whose transactions it runs in: the automation's completion store. */
  readonly completions: CompletionStore;
  /** Runs the side effect in a transaction that records `record` (none for a redrive), fenced by `options`. */
  run(source: string, record: CompletedItem | undefined, item: TodoItem<P>, context: ExecuteContext, options: FencedWriteOptions | undefined): Promise<unknown>;
}

/**
 * Exactly once for side effects written to the same database as the completion records: `execute`
 * gets the transaction (a pg client, a better-sqlite3 database) in which the item's completion is
 * recorded, fenced by the leader's token the way a view's writes are. Its writes and the record commit
 * together, or neither: after a crash the item runs again only if neither committed, and a stale
 * leader's transaction is rolled back. On SQLite `execute` must be synchronous.
 *
 * ```ts
 * const completions = new PostgresCompletionStore({ store });
 * new Automation({ ..., completions, execute: inTransaction(completions, async (item, client) => {
 *   await client.query('INSERT INTO shipments (order_id) VALUES ($1)', [item.payload.orderId]);
 * }) });
 * ```
 *
 * What the transaction does not cover (a mail sent, an HTTP call) is still at least once.
 */
export function inTransaction<P, Tx>(
  completions: TransactionalCompletionStore<Tx>,
  execute: (item: TodoItem<P>, tx: Tx, context: ExecuteContext) => unknown,
): TransactionalExecute<P> {
  if (typeof completions?.completeWithin !== 'function') {
    throw new InvalidArgumentError('inTransaction needs a completion store that runs transactions (PostgresCompletionStore or SqliteCompletionStore).');
  }
  if (typeof execute !== 'function') throw new InvalidArgumentError('inTransaction needs the side effect as a function (item, tx, context) => ...');
  return {
    [TRANSACTIONAL]: true,
    completions,
    run: (source, record, item, context, options) => completions.completeWithin(source, record, (tx) => execute(item, tx, context), options),
  };
}

export function isTransactional<P>(execute: unknown): execute is TransactionalExecute<P> {
  return typeof execute === 'object' && execute !== null && (execute as { [TRANSACTIONAL]?: unknown })[TRANSACTIONAL] === true;
}
