import { v7 as uuidv7 } from 'uuid';
import type { FencedWriteOptions } from '../core/checkpoint.js';
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
import { InvalidArgumentError } from '../core/errors.js';
import { MemoryCheckpointStore } from './memory-checkpoint-store.js';

/** Options of `MemoryDeadLetterStore` and `MemoryCompletionStore`. */
export interface MemoryFencedStoreOptions {
  /**
   * The checkpoints whose tokens the fences of `FencedWriteOptions` are checked against: the store the
   * leaders claim. Without it a fence cannot be checked (it is still validated), and a fenced write is
   * applied as an unfenced one would be.
   */
  checkpoints?: MemoryCheckpointStore;
}

/** The checkpoint store of `options`, refusing anything that is not a `MemoryCheckpointStore`. */
export function memoryFenceCheckpoints(options: MemoryFencedStoreOptions | undefined, className: string): MemoryCheckpointStore | undefined {
  const checkpoints = options?.checkpoints;
  if (checkpoints !== undefined && !(checkpoints instanceof MemoryCheckpointStore)) {
    throw new InvalidArgumentError(
      `${className} checks fences against a MemoryCheckpointStore (in the same process); pass the one the leaders claim as { checkpoints }, or leave it out.`,
    );
  }
  return checkpoints;
}

/**
 * The dead-letter queue in a Map, for the memory store, tests and examples. Letters are kept as the
 * database adapters keep them (JSON text), so callers get their own copies and the same errors.
 *
 * Fenced writes (`add` and `settleRedrive` with `{ fence }`) are checked against the
 * `MemoryCheckpointStore` given as `{ checkpoints }`, in the same synchronous step as the write, so no
 * claim can come between. Without `checkpoints` a fence cannot be checked and the write is applied.
 */
export class MemoryDeadLetterStore implements DeadLetterStore {
  readonly #rows = new Map<string, StoredDeadLetterRow>();
  readonly #checkpoints: MemoryCheckpointStore | undefined;

  constructor(options?: MemoryFencedStoreOptions) {
    this.#checkpoints = memoryFenceCheckpoints(options, 'MemoryDeadLetterStore');
  }

  async add(letter: NewDeadLetter, options?: FencedWriteOptions): Promise<DeadLetter> {
    const checked = checkNewDeadLetter(letter);
    this.#checkFence(options);
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
    const { source, status, limit, afterId, newestFirst } = checkDeadLetterQuery(query);
    const rows = this.#select(source, status);
    if (newestFirst) rows.reverse();
    return rows
      .filter((row) => afterId === undefined || (newestFirst ? row.id < afterId : row.id > afterId))
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

  async settleRedrive(id: string, outcome: { ok: true } | { ok: false; attempts: FailedAttempt[] }, options?: FencedWriteOptions): Promise<void> {
    const key = checkDeadLetterId(id);
    const checked = checkOutcome(outcome);
    this.#checkFence(options);
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

  #checkFence(options: unknown): void {
    const fence = checkFence(options);
    if (fence !== undefined && this.#checkpoints !== undefined) assertFenceHolds(fence, this.#checkpoints.fencingToken(fence.checkpoint));
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
