import { FencedError } from '../core/errors.js';
import type { CheckpointInfo, CheckpointStore } from '../core/checkpoint.js';

interface Row {
  position: number | undefined;
  fencingToken: number;
  updatedAt: Date;
}

/** Checkpoints in a Map: for the memory store, tests, and single-process use. */
export class MemoryCheckpointStore implements CheckpointStore {
  readonly #rows = new Map<string, Row>();

  async load(name: string): Promise<number | undefined> {
    return this.#rows.get(name)?.position;
  }

  async claim(name: string, fencingToken: number): Promise<number | undefined> {
    const row = this.#rows.get(name);
    if (row && row.fencingToken > fencingToken) throw new FencedError(name, fencingToken, row.fencingToken);
    this.#rows.set(name, { position: row?.position, fencingToken, updatedAt: new Date() });
    return row?.position;
  }

  async save(name: string, position: number, options: { fencingToken?: number } = {}): Promise<void> {
    const row = this.#rows.get(name);
    const token = options.fencingToken;
    if (token !== undefined && row && row.fencingToken > token) throw new FencedError(name, token, row.fencingToken);
    this.#rows.set(name, { position, fencingToken: Math.max(token ?? 0, row?.fencingToken ?? 0), updatedAt: new Date() });
  }

  async list(): Promise<CheckpointInfo[]> {
    return [...this.#rows]
      .filter(([, row]) => row.position !== undefined)
      .map(([name, row]) => ({ name, position: row.position as number, fencingToken: row.fencingToken, updatedAt: row.updatedAt }));
  }
}
