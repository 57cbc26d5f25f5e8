import { byName, checkReset, heldCheckpoint, joinSubscriptions, unknownCheckpoint } from '../core/admin.js';
import type { Admin, CheckpointRow, DeadLetterCount, LockRow, MigrateOutcome, ResetOptions, ResetOutcome, SchemaState, SubscriptionRow, ViewRow, ViewTableCount } from '../core/admin.js';
import type { DeadLetter } from '../core/dead-letter.js';
import type { EventStore } from '../core/store.js';
import type { MemoryCheckpointStore } from './memory-checkpoint-store.js';
import type { MemoryCompletionStore } from './memory-completion-store.js';
import type { MemoryDeadLetterStore } from './memory-dead-letter-store.js';
import type { MemoryLockRegistry } from './memory-lock-registry.js';
import { MemoryRunnerStatusStore } from './memory-runner-status.js';

export interface MemoryAdminParts {
  store: EventStore;
  checkpoints: MemoryCheckpointStore;
  deadLetters: MemoryDeadLetterStore;
  completions: MemoryCompletionStore;
  locks: MemoryLockRegistry | undefined;
}

const PAGE = 1000;

/**
 * The admin surface over the memory backend's parts. What the parts do not enumerate is found from the
 * names they do: a checkpoint claimed but never saved, and a lock, show only for a name that has a
 * saved checkpoint, dead letters or a status row. Memory has no schema (version 0) and no view tables.
 */
export class MemoryAdmin implements Admin {
  readonly runners = new MemoryRunnerStatusStore();
  readonly #parts: MemoryAdminParts;

  constructor(parts: MemoryAdminParts) {
    this.#parts = parts;
  }

  async schema(): Promise<SchemaState> {
    return { version: 0, latest: 0, exists: true };
  }

  async migrate(): Promise<MigrateOutcome> {
    return { applied: [], version: 0 };
  }

  async subscriptions(): Promise<SubscriptionRow[]> {
    const [head, checkpoints, locks] = await Promise.all([this.#parts.store.headPosition(), this.checkpoints(), this.locks()]);
    return joinSubscriptions(head, checkpoints, locks);
  }

  async checkpoints(): Promise<CheckpointRow[]> {
    const saved = await this.#parts.checkpoints.list();
    return saved.map(({ name, position, fencingToken, updatedAt }) => ({ name, position, fencingToken, updatedAt })).sort((a, b) => byName(a.name, b.name));
  }

  async locks(): Promise<LockRow[]> {
    const registry = this.#parts.locks;
    if (registry === undefined) return [];
    const rows: LockRow[] = [];
    for (const name of await this.#names()) {
      const token = registry.holderToken(name);
      if (token !== undefined) rows.push({ name, fencingToken: token, holder: undefined, held: true });
      else if ((this.#parts.checkpoints.fencingToken(name) ?? 0) > 0) rows.push({ name, fencingToken: undefined, holder: undefined, held: false });
    }
    return rows;
  }

  async views(): Promise<ViewRow[]> {
    return [];
  }

  async viewTables(): Promise<ViewTableCount[]> {
    return [];
  }

  async deadLetterCounts(): Promise<DeadLetterCount[]> {
    const counts = new Map<string, DeadLetterCount>();
    for (const letter of await this.#letters()) {
      const key = JSON.stringify([letter.source, letter.stage, letter.status]);
      const count = counts.get(key) ?? { source: letter.source, stage: letter.stage, status: letter.status, count: 0 };
      count.count += 1;
      counts.set(key, count);
    }
    return [...counts.values()].sort((a, b) => byName(a.source, b.source) || byName(a.stage, b.stage) || byName(a.status, b.status));
  }

  async completionSources(): Promise<string[]> {
    const sources: string[] = [];
    for (const name of await this.#names()) {
      if ((await this.#parts.completions.completedAfter(name, 0)).size > 0) sources.push(name);
    }
    return sources;
  }

  async resetCheckpoint(name: string, position: number, options?: ResetOptions): Promise<ResetOutcome> {
    const checked = checkReset(name, position, options);
    const { checkpoints, locks } = this.#parts;
    const saved = (await checkpoints.list()).find((row) => row.name === checked.name);
    // From here on nothing awaits until the save has run: no claim can come in between.
    const checkpointToken = checkpoints.fencingToken(checked.name);
    if (checkpointToken === undefined) {
      throw unknownCheckpoint(checked.name, (await this.checkpoints()).map((row) => row.name));
    }
    const holderToken = locks?.holderToken(checked.name);
    const lock: LockRow | undefined = holderToken === undefined ? undefined : { name: checked.name, fencingToken: holderToken, holder: undefined, held: true };
    if (lock && !checked.force) throw heldCheckpoint(checked.name, lock);
    const fenced = checkpointToken > 0 || holderToken !== undefined;
    // One above every token that claimed it or holds the lock: those are refused, the next holder's passes.
    const fencingToken = fenced ? Math.max(checkpointToken, holderToken ?? 0) + 1 : undefined;
    const saving = checkpoints.save(checked.name, checked.position, fencingToken === undefined ? {} : { fencingToken });
    await saving;
    return {
      name: checked.name,
      previous: saved?.position,
      position: checked.position,
      fencingToken,
      heldBy: lock,
      fencing: fenced ? 'checkpoint' : 'none',
    };
  }

  /** Every name the parts know: saved checkpoints, dead-letter sources, status rows. */
  async #names(): Promise<string[]> {
    const names = new Set<string>();
    for (const row of await this.#parts.checkpoints.list()) names.add(row.name);
    for (const letter of await this.#letters()) names.add(letter.source);
    for (const row of await this.runners.list()) names.add(row.name);
    return [...names].sort(byName);
  }

  async #letters(): Promise<DeadLetter[]> {
    const letters: DeadLetter[] = [];
    for (;;) {
      const page = await this.#parts.deadLetters.list({ limit: PAGE, afterId: letters[letters.length - 1]?.id });
      letters.push(...page);
      if (page.length < PAGE) return letters;
    }
  }
}
