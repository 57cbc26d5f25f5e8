import { v7 as uuidv7 } from 'uuid';
import {
  checkDeadLetterCountQuery,
  checkDeadLetterId,
  checkDeadLetterQuery,
  checkNewDeadLetter,
  checkOutcome,
  checkSelector,
  decodeDeadLetter,
} from '../core/dead-letter-checks.js';
import type { CheckedSelector, StoredDeadLetterRow } from '../core/dead-letter-checks.js';
import type { DeadLetter, DeadLetterQuery, DeadLetterSelector, DeadLetterStore, FailedAttempt, NewDeadLetter } from '../core/dead-letter.js';

/**
 * The dead-letter queue in a Map, for the memory store, tests and examples. Letters are kept as the
 * database adapters keep them (JSON text), so callers get their own copies and the same errors.
 */
export class MemoryDeadLetterStore implements DeadLetterStore {
  readonly #rows = new Map<string, StoredDeadLetterRow>();

  async add(letter: NewDeadLetter): Promise<DeadLetter> {
    const checked = checkNewDeadLetter(letter);
    const now = Date.now();
    const row: StoredDeadLetterRow = {
      ...checked,
      id: uuidv7(),
      attempts: JSON.stringify(checked.attempts),
      status: 'dead',
      createdAt: now,
      updatedAt: now,
    };
    this.#rows.set(row.id, row);
    return decodeDeadLetter(row);
  }

  async list(query?: DeadLetterQuery): Promise<DeadLetter[]> {
    const { source, status, limit, afterId } = checkDeadLetterQuery(query);
    return this.#select(source, status)
      .filter((row) => afterId === undefined || row.id > afterId)
      .slice(0, limit)
      .map(decodeDeadLetter);
  }

  async count(query?: Omit<DeadLetterQuery, 'limit' | 'afterId'>): Promise<number> {
    const { source, status } = checkDeadLetterCountQuery(query);
    return this.#select(source, status).length;
  }

  async get(id: string): Promise<DeadLetter | undefined> {
    const row = this.#rows.get(checkDeadLetterId(id));
    return row && decodeDeadLetter(row);
  }

  async redrive(selector: DeadLetterSelector): Promise<number> {
    const now = Date.now();
    let changed = 0;
    for (const row of this.#matching(checkSelector(selector))) {
      if (row.status !== 'dead') continue;
      row.status = 'redrive';
      row.updatedAt = now;
      changed += 1;
    }
    return changed;
  }

  async settleRedrive(id: string, outcome: { ok: true } | { ok: false; attempts: FailedAttempt[] }): Promise<void> {
    const key = checkDeadLetterId(id);
    const checked = checkOutcome(outcome);
    const row = this.#rows.get(key);
    if (row?.status !== 'redrive') return;
    if (checked.ok) {
      this.#rows.delete(key);
      return;
    }
    row.attempts = JSON.stringify([...(JSON.parse(row.attempts) as unknown[]), ...checked.attempts]);
    row.status = 'dead';
    row.updatedAt = Date.now();
  }

  async discard(selector: DeadLetterSelector): Promise<number> {
    const rows = this.#matching(checkSelector(selector));
    for (const row of rows) this.#rows.delete(row.id);
    return rows.length;
  }

  /** Oldest first: ids are UUIDv7 from one generator, so their order is the order of creation. */
  #select(source: string | undefined, status: string | undefined): StoredDeadLetterRow[] {
    return [...this.#rows.values()]
      .filter((row) => (source === undefined || row.source === source) && (status === undefined || row.status === status))
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  #matching(selector: CheckedSelector): StoredDeadLetterRow[] {
    if (selector.id !== undefined) {
      const row = this.#rows.get(selector.id);
      return row ? [row] : [];
    }
    return [...this.#rows.values()].filter((row) => row.source === selector.source);
  }
}
