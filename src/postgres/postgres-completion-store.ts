import type pg from 'pg';
import type { FencedWriteOptions } from '../core/checkpoint.js';
import { checkCompletedItems, checkPosition, checkSource, completionId } from '../core/dead-letter-checks.js';
import type { CompletedItem, TransactionalCompletionStore } from '../core/dead-letter.js';
import type { WriteFence } from '../core/checkpoint.js';
import { translateError } from './errors.js';
import { assertFenceHoldsFor, assertStorableText, checkPostgresFence, fenceCte, fenceHolds, unstorableText } from './postgres-dead-letter-store.js';
import { PostgresTableAccess } from './table-access.js';
import type { PostgresTableOptions } from './table-access.js';
import { quoteSchema } from './schema.js';
import { hearWhileCheckedOut } from './connection.js';

/** Where the completion records live: as for `PostgresCheckpointStore` and `PostgresDeadLetterStore`. */
export type PostgresCompletionStoreOptions = PostgresTableOptions;

interface Statements {
  mark: pg.QueryArrayConfig;
  /** As `mark`, with the fence ($4 checkpoint, $5 token): returns the checkpoint's token. */
  markFenced: pg.QueryArrayConfig;
  after: pg.QueryArrayConfig;
  prune: pg.QueryArrayConfig;
}

// Prepared per schema (the name says which), shared by every completion store of the process.
const cache = new Map<string, Statements>();

function statements(schema: string): Statements {
  let cached = cache.get(schema);
  if (cached) return cached;
  const s = quoteSchema(schema);
  const statement = (what: string, text: string): pg.QueryArrayConfig => ({ name: `eskit.${schema}.completions_${what}`, rowMode: 'array', text });
  const insert = (where: string): string => `INSERT INTO ${s}.completions (source, position, item_id)
       SELECT $1::text, u.position, u.item_id FROM unnest($2::bigint[], $3::text[]) AS u(position, item_id) ${where}
       ON CONFLICT DO NOTHING`;
  cached = {
    // A whole batch in one statement: all of it is recorded or none. DO NOTHING (unlike DO UPDATE)
    // also takes an item that appears twice in the batch.
    mark: statement('mark', insert('')),
    markFenced: statement('mark_fenced', `WITH ${fenceCte(schema, '$4')}, marked AS (${insert(`WHERE ${fenceHolds('$5')}`)}) SELECT (SELECT fencing_token FROM fence)`),
    after: statement('after', `SELECT position, item_id FROM ${s}.completions WHERE source = $1 AND position > $2`),
    prune: statement('prune', `DELETE FROM ${s}.completions WHERE source = $1 AND position <= $2`),
  };
  cache.set(schema, cached);
  return cached;
}

/**
 * Completion records in `<schema>.completions`, keyed (source, position, item_id), next to the events.
 * Every call is one statement in autocommit: a batch is recorded whole or not at all. A fenced batch is
 * still one statement, which locks the fence's checkpoint row FOR SHARE to read its token, as a fenced
 * dead-letter write does, so a concurrent claim is ordered with it.
 *
 * A `source` or item id with U+0000 or a lone UTF-16 surrogate (which PostgreSQL text cannot store) is
 * refused by `markCompleted` with ESKIT_INVALID_ARGUMENT, recording nothing of the batch; such a source
 * has no records to read or prune.
 *
 * ```ts
 * const completions = new PostgresCompletionStore({ store }); // shares the event store's pool and schema
 * ```
 */
export class PostgresCompletionStore implements TransactionalCompletionStore<pg.PoolClient> {
  readonly #access: PostgresTableAccess;

  constructor(options: PostgresCompletionStoreOptions) {
    this.#access = new PostgresTableAccess(options, 'PostgresCompletionStore', 'completion store');
  }

  get schema(): string {
    return this.#access.schema;
  }

  /** The pool the store runs on (yours, the event store's, or the one it created). */
  get pool(): pg.Pool {
    return this.#access.pool;
  }

  async markCompleted(source: string, items: ReadonlyArray<{ position: number; itemId: string }>, options?: FencedWriteOptions): Promise<void> {
    checkSource(source);
    const checked = checkCompletedItems(items);
    const fence = checkPostgresFence(options);
    assertStorableText(source, 'source');
    checked.forEach((item, index) => assertStorableText(item.itemId, `items[${index}].itemId`));
    await this.#access.ready();
    await this.#mark(this.pool, source, checked, fence);
  }

  /**
   * Runs `work` with a client in a transaction that also records `item` (fenced), and commits both, or
   * neither. For an automation's side effects in this database, through `inTransaction`:
   *
   * ```ts
   * const completions = new PostgresCompletionStore({ store });
   * execute: inTransaction(completions, async (item, client) => {
   *   await client.query('INSERT INTO shipments (order_id) VALUES ($1)', [item.payload.orderId]);
   * }),
   * ```
   *
   * Use only `client` inside it (another connection would be outside the transaction), and do not
   * commit or roll back yourself.
   */
  async completeWithin<T>(source: string, item: CompletedItem | undefined, work: (client: pg.PoolClient) => T, options?: FencedWriteOptions): Promise<Awaited<T>> {
    checkSource(source);
    const checked = item === undefined ? [] : checkCompletedItems([item]);
    const fence = checkPostgresFence(options);
    assertStorableText(source, 'source');
    checked.forEach((entry) => assertStorableText(entry.itemId, 'item.itemId'));
    await this.#access.ready();
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (error) {
      throw translateError(error, this.schema, this.pool);
    }
    const stopHearing = hearWhileCheckedOut(client);
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      const result = await work(client);
      await this.#mark(client, source, checked, fence);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch((rollbackError: unknown) => {
        // A connection that cannot even roll back is not given back to the pool.
        broken = rollbackError instanceof Error ? rollbackError : new Error('ROLLBACK failed');
      });
      throw error;
    } finally {
      stopHearing();
      client.release(broken);
    }
  }

  async completedAfter(source: string, position: number): Promise<Set<string>> {
    checkSource(source);
    checkPosition(position);
    if (unstorableText(source)) return new Set();
    const result = await this.#access.query(statements(this.schema).after, [source, position]);
    // Positions are bigints, which arrive as text: Number() gives the same digits completionId would.
    return new Set(result.rows.map(([at, itemId]) => completionId(Number(at), itemId as string)));
  }

  async prune(source: string, position: number): Promise<void> {
    checkSource(source);
    checkPosition(position);
    if (unstorableText(source)) return;
    await this.#access.query(statements(this.schema).prune, [source, position]);
  }

  /** Records `items`, fenced by `fence` when given (then also when there are none: the fence is checked). */
  async #mark(client: pg.Pool | pg.ClientBase, source: string, items: CompletedItem[], fence: WriteFence | undefined): Promise<void> {
    const values = [source, items.map((i) => i.position), items.map((i) => i.itemId)];
    const sql = statements(this.schema);
    try {
      if (fence === undefined) {
        if (items.length > 0) await client.query({ ...sql.mark, values });
        return;
      }
      const result = await client.query<unknown[]>({ ...sql.markFenced, values: [...values, fence.checkpoint, fence.fencingToken] });
      assertFenceHoldsFor(fence, (result.rows[0] as unknown[])[0]);
    } catch (error) {
      throw translateError(error, this.schema, client);
    }
  }

  /** Ends the pool if this store created it (from `connectionString`); later calls fail with ESKIT_STORE_CLOSED. Safe to call twice. */
  async close(): Promise<void> {
    await this.#access.close();
  }
}
