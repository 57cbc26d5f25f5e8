import { checkPruneAge, checkRunnerStatus, isStale } from '../core/runner-status.js';
import type { RunnerStatusRow, RunnerStatusStore, RunnerStatusUpdate } from '../core/runner-status.js';
import { byName } from '../core/admin.js';

interface Stored {
  update: RunnerStatusUpdate;
  /** Milliseconds since the epoch: the process is the database here, so its clock is the database's. */
  at: number;
}

/** Status rows in a Map, for the memory backend (one process: every runner and reader shares it). */
export class MemoryRunnerStatusStore implements RunnerStatusStore {
  readonly #rows = new Map<string, Stored>();

  async publish(update: RunnerStatusUpdate): Promise<void> {
    const checked = checkRunnerStatus(update);
    this.#rows.set(JSON.stringify([checked.name, checked.nodeId]), { update: checked, at: Date.now() });
  }

  async list(): Promise<RunnerStatusRow[]> {
    const now = Date.now();
    return [...this.#rows.values()]
      .map(({ update, at }): RunnerStatusRow => {
        const heartbeatAgeMs = Math.max(0, now - at);
        return {
          ...update,
          lastEvent: update.lastEvent && { position: update.lastEvent.position, at: new Date(at - update.lastEvent.ageMs) },
          work: update.work && { ...update.work },
          heartbeatAt: new Date(at),
          heartbeatAgeMs,
          stale: isStale(update.state, update.heartbeatMs, heartbeatAgeMs),
        };
      })
      .sort((a, b) => byName(a.name, b.name) || byName(a.nodeId, b.nodeId));
  }

  async prune(olderThanMs: number): Promise<number> {
    const limit = Date.now() - checkPruneAge(olderThanMs);
    let removed = 0;
    for (const [key, row] of this.#rows) {
      if (row.at < limit) {
        this.#rows.delete(key);
        removed += 1;
      }
    }
    return removed;
  }
}
