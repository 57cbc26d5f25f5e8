import type { FencedWriteOptions } from '../core/checkpoint.js';
import { assertFenceHolds, checkCompletedItems, checkFence, checkPosition, checkSource, completionId } from '../core/dead-letter-checks.js';
import type { CompletionStore } from '../core/dead-letter.js';
import type { MemoryCheckpointStore } from './memory-checkpoint-store.js';
import { memoryFenceCheckpoints } from './memory-dead-letter-store.js';
import type { MemoryFencedStoreOptions } from './memory-dead-letter-store.js';

/**
 * Completion records in a Map (per source: item id → position), for the memory store and tests. A
 * fenced `markCompleted` is checked against the `MemoryCheckpointStore` given as `{ checkpoints }`, as
 * in `MemoryDeadLetterStore`; without it a fence cannot be checked and the batch is recorded.
 */
export class MemoryCompletionStore implements CompletionStore {
  readonly #sources = new Map<string, Map<string, number>>();
  readonly #checkpoints: MemoryCheckpointStore | undefined;

  constructor(options?: MemoryFencedStoreOptions) {
    this.#checkpoints = memoryFenceCheckpoints(options, 'MemoryCompletionStore');
  }

  async markCompleted(source: string, items: ReadonlyArray<{ position: number; itemId: string }>, options?: FencedWriteOptions): Promise<void> {
    checkSource(source);
    // All items are checked before any is recorded: a bad one records none.
    const checked = checkCompletedItems(items);
    const fence = checkFence(options);
    if (fence !== undefined && this.#checkpoints !== undefined) assertFenceHolds(fence, this.#checkpoints.fencingToken(fence.checkpoint));
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
