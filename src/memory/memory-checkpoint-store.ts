import { FencedError, InvalidArgumentError } from '../core/errors.js';
import type { CheckpointInfo, CheckpointStore } from '../core/checkpoint.js';

interface Row {
  position: number | undefined;
  fencingToken: number;
  updatedAt: Date;
}

function assertName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || name.length === 0) throw new InvalidArgumentError('A checkpoint needs a non-empty name');
}

function assertCount(what: string, value: unknown): asserts value is number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new InvalidArgumentError(`${what} must be a non-negative integer, got ${String(value)}`);
  }
}

/**
 * Checkpoints in a Map: for the memory store, tests, and single-process use. Give it to
 * `MemoryDeadLetterStore` and `MemoryCompletionStore` as `{ checkpoints }` so that they can check the
 * fences of a leader's writes against its tokens.
 */
export class MemoryCheckpointStore implements CheckpointStore {
  readonly #rows = new Map<string, Row>();

  async load(name: string): Promise<number | undefined> {
    assertName(name);
    return this.#rows.get(name)?.position;
  }

  async claim(name: string, fencingToken: number): Promise<number | undefined> {
    assertName(name);
    assertCount('fencingToken', fencingToken);
    const row = this.#rows.get(name);
    if (row && row.fencingToken > fencingToken) throw new FencedError(name, fencingToken, row.fencingToken);
    this.#rows.set(name, { position: row?.position, fencingToken, updatedAt: new Date() });
    return row?.position;
  }

  async save(name: string, position: number, options: { fencingToken?: number } = {}): Promise<void> {
    assertName(name);
    assertCount('position', position);
    const token = options.fencingToken;
    if (token !== undefined) assertCount('fencingToken', token);
    const row = this.#rows.get(name);
    if (token !== undefined && row && row.fencingToken > token) throw new FencedError(name, token, row.fencingToken);
    this.#rows.set(name, { position, fencingToken: Math.max(token ?? 0, row?.fencingToken ?? 0), updatedAt: new Date() });
  }

  async list(): Promise<CheckpointInfo[]> {
    return [...this.#rows]
      .filter(([, row]) => row.position !== undefined)
      .map(([name, row]) => ({ name, position: row.position as number, fencingToken: row.fencingToken, updatedAt: row.updatedAt }));
  }

  /**
   * The newest token that claimed or saved `name` (undefined: neither happened yet). Synchronous, so
   * that the memory stores check a fence and write in one step, with no claim in between.
   */
  fencingToken(name: string): number | undefined {
    return this.#rows.get(name)?.fencingToken;
  }
}
