import type pg from 'pg';
import { onPooledClient } from './pooled-query.js';

/** The parts of node-postgres' Connection a Submittable drives (typed here: @types/pg leaves them out). */
interface ProtocolConnection {
  parsedStatements: Record<string, string>;
  stream: { cork?(): void; uncork?(): void };
  parse(query: { name: string; text: string; types: number[] }): void;
  close(target: { type: 'S'; name: string }): void;
  bind(config: { statement: string; values: (string | null)[] }): void;
  execute(config: { portal: string; rows: number }): void;
  sync(): void;
}

/** A field of a row as the server sent it (text format). */
type Field = string | null;

/**
 * Two named statements in one round trip and one transaction: Bind and Execute each, then one Sync.
 * Up to the Sync the server runs them in one implicit transaction (committed at the Sync, rolled back
 * on an error), so a transaction-scoped lock taken by the first is held through the second and its
 * commit. node-postgres sends one Sync per query, so this is a Submittable of its own (its public
 * extension point, as pg-cursor is). Resolves to the second statement's rows, fields as text.
 */
class StatementPair implements pg.Submittable {
  readonly #statements: readonly [{ name: string; text: string }, { name: string; text: string }];
  readonly #values: (string | null)[];
  readonly #done: (error: Error | undefined, rows: Field[][]) => void;
  readonly #rows: Field[][] = [];
  #completed = 0;
  #parsing: string[] = [];
  #connection: ProtocolConnection | undefined;

  constructor(first: { name: string; text: string }, second: { name: string; text: string }, values: (string | null)[], done: (error: Error | undefined, rows: Field[][]) => void) {
    this.#statements = [first, second];
    this.#values = values;
    this.#done = done;
  }

  submit(connection: pg.Connection): void {
    const wire = connection as unknown as ProtocolConnection;
    this.#connection = wire;
    wire.stream.cork?.();
    try {
      for (const statement of this.#statements) {
        if (wire.parsedStatements[statement.name] === statement.text) continue;
        // Not known to be parsed on this connection: an earlier attempt may have parsed it and failed
        // later, so close it first (closing a statement that does not exist is no error).
        wire.close({ type: 'S', name: statement.name });
        wire.parse({ name: statement.name, text: statement.text, types: [] });
        this.#parsing.push(statement.name);
      }
      const [first, second] = this.#statements;
      wire.bind({ statement: first.name, values: [] });
      wire.execute({ portal: '', rows: 0 });
      wire.bind({ statement: second.name, values: this.#values });
      wire.execute({ portal: '', rows: 0 });
      wire.sync();
    } finally {
      wire.stream.uncork?.();
    }
  }

  handleRowDescription(): void {}
  handleDataRow(message: { fields: Field[] }): void {
    if (this.#completed === 1) this.#rows.push(message.fields);
  }
  handleCommandComplete(): void {
    this.#completed++;
  }
  handleEmptyQuery(): void {}
  handlePortalSuspended(): void {}
  handleCopyInResponse(): void {}
  handleCopyData(): void {}
  // The client forgets its active query on an error, so ReadyForQuery will not reach this one: the
  // error is the answer (the server skips the rest up to the Sync, and rolls the transaction back).
  // What was parsed is not known then, so nothing is recorded as parsed.
  handleError(error: Error): void {
    this.#done(error, []);
  }
  handleReadyForQuery(): void {
    // Everything went through: the statements sent for parsing are parsed on this connection.
    for (const statement of this.#statements) {
      if (this.#parsing.includes(statement.name) && this.#connection) this.#connection.parsedStatements[statement.name] = statement.text;
    }
    this.#done(undefined, this.#rows);
  }
}

/**
 * Runs `first` then `second` (with `values`) in one round trip and one transaction on a client from
 * the pool (see onPooledClient).
 */
export function runStatementPair(
  pool: pg.Pool,
  first: { name: string; text: string },
  second: { name: string; text: string },
  values: (string | null)[],
): Promise<Field[][]> {
  return onPooledClient<Field[][]>(pool, (client, done) => {
    client.query(new StatementPair(first, second, values, done));
  });
}
