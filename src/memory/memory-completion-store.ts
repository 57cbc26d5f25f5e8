import { checkCompletedItems, checkPosition, checkSource, completionId } from '../core/dead-letter-checks.js';
import type { CompletionStore } from '../core/dead-letter.js';

/** Completion records in a Map (per source: item id → position), for the memory store and tests. */
export class MemoryCompletionStore implements CompletionStore {
  readonly #sources = new Map<string, Map<string, number>>();

  async markCompleted(source: string, items: ReadonlyArray<{ position: number; itemId: string }>): Promise<void> {
    checkSource(source);
    // All items are checked before any is recorded: a bad one records none.
    const checked = checkCompletedItems(items);
    if (checked.length === 0) return;
    let records = this.#sources.get(source);
    if (records === undefined) {
      records = new Map();
      this.#sources.set(source, records);
    }
    for (const { position, itemId } of checked) records.set(completionId(position, itemId), position);
  }

  async completedAfter(source: string, position: number): Promise<Set<string>> {
    checkSource(source);
    checkPosition(position);
    const ids = new Set<string>();
    for (const [id, at] of this.#sources.get(source) ?? []) if (at > position) ids.add(id);
    return ids;
  }

  async prune(source: string, position: number): Promise<void> {
    checkSource(source);
    checkPosition(position);
    const records = this.#sources.get(source);
    if (records === undefined) return;
    for (const [id, at] of records) if (at <= position) records.delete(id);
    if (records.size === 0) this.#sources.delete(source);
  }
}
