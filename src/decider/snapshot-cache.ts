/** A snapshot as a handler keeps it in memory: the stored row's identity and its state as JSON text. */
export interface CachedSnapshot {
  streamVersion: number;
  eventId: string;
  /** JSON text, parsed on each use, so that no caller shares an object with the cache. */
  state: string;
  /** Key ids of the personal data in the state: it is used only while they all live. */
  kids: readonly string[];
}

/**
 * The latest snapshot a CommandHandler wrote, per stream (a snapshot loaded from the store is not kept:
 * only the writes go through `set`), so that a load can skip reading it back from the store (one round trip of the three a command costs on PostgreSQL).
 *
 * Only ever a hint. A cached snapshot is used exactly like a stored one: only if the stream still has
 * its event at its version with its id, else the store's is tried, then a full replay. Another process
 * may have written a newer one meanwhile: this one is older but still right, and the policy counts
 * from it, so this handler writes its own soon and its loads stay short.
 *
 * Bounded by entries and by the bytes of their text, least recently used out first.
 */
export class SnapshotCache {
  readonly #entries = new Map<string, CachedSnapshot>();
  readonly #maxEntries: number;
  readonly #maxBytes: number;
  #bytes = 0;

  constructor(maxEntries: number, maxBytes: number) {
    this.#maxEntries = maxEntries;
    this.#maxBytes = maxBytes;
  }

  get(streamId: string): CachedSnapshot | undefined {
    const entry = this.#entries.get(streamId);
    if (entry !== undefined) {
      // Most recently used last.
      this.#entries.delete(streamId);
      this.#entries.set(streamId, entry);
    }
    return entry;
  }

  /** Keeps `entry` unless an entry of a higher version is there already (a slower write finishing late). */
  set(streamId: string, entry: CachedSnapshot): void {
    if (this.#maxEntries === 0) return;
    const current = this.#entries.get(streamId);
    if (current !== undefined && current.streamVersion > entry.streamVersion) return;
    this.delete(streamId);
    const size = entry.state.length * 2;
    if (size > this.#maxBytes / 8) return; // one huge state must not push every other one out
    this.#entries.set(streamId, entry);
    this.#bytes += size;
    for (const [key, old] of this.#entries) {
      if (this.#entries.size <= this.#maxEntries && this.#bytes <= this.#maxBytes) break;
      this.#entries.delete(key);
      this.#bytes -= old.state.length * 2;
    }
  }

  delete(streamId: string): void {
    const entry = this.#entries.get(streamId);
    if (entry === undefined) return;
    this.#entries.delete(streamId);
    this.#bytes -= entry.state.length * 2;
  }
}
