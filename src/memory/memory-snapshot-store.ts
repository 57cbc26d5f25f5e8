import { checkSnapshot, checkSnapshotText, parseSnapshotState } from '../core/snapshot.js';
import type { NewSnapshot, SaveSnapshotOptions, Snapshot, SnapshotStore } from '../core/snapshot.js';

interface Row {
  stateVersion: string;
  streamVersion: number;
  eventId: string;
  /** JSON text, parsed on every load: a caller that changes the state it got cannot change the row. */
  state: string;
  createdAt: Date;
}

export interface MemorySnapshotStoreOptions {
  /**
   * The memory event store whose streams these are: a stream it deletes loses its snapshots in the
   * same step, as the database adapters delete them in the deletion's transaction.
   */
  store?: { onStreamDeleted?(listener: (streamId: string) => void): () => void };
}

/** Snapshots in a Map (stream → name → row): for the memory backend, tests and single-process use. */
export class MemorySnapshotStore implements SnapshotStore {
  readonly #streams = new Map<string, Map<string, Row>>();

  constructor(options: MemorySnapshotStoreOptions = {}) {
    options.store?.onStreamDeleted?.((streamId) => this.#streams.delete(streamId));
  }

  async load(streamId: string, name: string): Promise<Snapshot | undefined> {
    checkSnapshotText('streamId', streamId);
    checkSnapshotText('name', name);
    const row = this.#streams.get(streamId)?.get(name);
    if (row === undefined) return undefined;
    const { stateVersion, streamVersion, eventId, createdAt } = row;
    return { streamId, name, stateVersion, streamVersion, eventId, state: parseSnapshotState(streamId, name, row.state), createdAt: new Date(createdAt) };
  }

  async save(snapshot: NewSnapshot, options?: SaveSnapshotOptions): Promise<boolean> {
    const checked = checkSnapshot(snapshot, options);
    let names = this.#streams.get(checked.streamId);
    const current = names?.get(checked.name);
    if (current !== undefined) {
      const { replacing } = checked;
      const supersedes = replacing !== undefined && current.streamVersion === replacing.streamVersion && current.eventId === replacing.eventId;
      if (current.streamVersion >= checked.streamVersion && !supersedes) return false;
    }
    if (names === undefined) {
      names = new Map();
      this.#streams.set(checked.streamId, names);
    }
    const { stateVersion, streamVersion, eventId, state } = checked;
    names.set(checked.name, { stateVersion, streamVersion, eventId, state, createdAt: new Date() });
    return true;
  }

  async deleteStream(streamId: string): Promise<number> {
    checkSnapshotText('streamId', streamId);
    const count = this.#streams.get(streamId)?.size ?? 0;
    this.#streams.delete(streamId);
    return count;
  }

  /** Test hook: replaces a row's state text as is (for example with text that is not JSON), as an outside writer might. */
  corruptForTesting(streamId: string, name: string, stateText: string): void {
    const row = this.#streams.get(streamId)?.get(name);
    if (row !== undefined) row.state = stateText;
  }
}
