import type { CheckpointInfo, CheckpointStore } from '../../core/checkpoint.js';
import { PartitionCountError } from '../../core/errors.js';
import type { Lease, LockRegistry } from '../../core/lock.js';
import type { Logger } from '../../core/logger.js';
import { unlessAborted } from '../../core/deadline.js';
import { delay } from '../../core/retry.js';
import { isTransient } from '../checkpointing.js';
import type { StartFrom } from '../types.js';
import { parsePartitionName, partitionName } from './naming.js';

export interface LayoutOptions {
  owner: string;
  name: string;
  /** The count this runner runs with: UNPARTITIONED (0) for none. */
  partitions: number;
  checkpoints: CheckpointStore;
  locks: LockRegistry | undefined;
  logger: Logger;
  /** Stops waiting for another node's layout check. */
  signal: AbortSignal;
  /** Where an old partition that never saved a checkpoint began (see adoptLayout). */
  startFrom?: StartFrom;
}

/**
 * The count of a runner without partitions: 0, not 1, since `partitions: 1` is a layout of its own (its
 * checkpoint is `<name>#0/1`). Counted as 1 both, a switch between them found its count in use and
 * seeded nothing, and the new checkpoint started from startFrom (with 'end', skipping every event since
 * the old one).
 */
export const UNPARTITIONED = 0;

/** The checkpoints of one way of splitting the runner: `count` UNPARTITIONED is the plain checkpoint. */
export interface Layout {
  count: number;
  checkpoints: CheckpointInfo[];
  lastSaved: number;
}

/**
 * Makes sure the partitions of this count are the ones in use before any of them runs. When the
 * checkpoints saved last belong to another count (the runner was unpartitioned, or ran with another
 * count), each new partition starts from the LOWEST of those checkpoints: a key's events may now be
 * in another partition, and only the lowest position is sure to cover all of them. What lies between
 * it and each old checkpoint is delivered again (at least once, never lost).
 *
 * Refused (PartitionCountError) while a node still holds one of the old partitions: two partitionings
 * at once would give one key to two nodes. Nodes serialise on the lock `<name>#layout`.
 */
export async function adoptLayout(o: LayoutOptions): Promise<void> {
  // The common case, this count in use (or none at all), takes one read and no lock.
  if (!toAdopt(await o.checkpoints.list(), o)) return;
  const layoutLock = o.locks ? await o.locks.acquire(`${o.name}#layout`, { signal: o.signal }) : undefined;
  try {
    const adopt = toAdopt(await o.checkpoints.list(), o);
    if (!adopt) return;
    const { current, names } = adopt;
    const held = await holdAll(o.locks, namesOf(o.name, current.count), (name) =>
      new PartitionCountError(
        `${o.owner}: its checkpoints were saved with ${describeCount(current.count)}, and a node still runs "${name}". ` +
          `Stop every node that runs it with ${describeCount(current.count)}, then start the nodes with the new count: ` +
          'the new partitions then start from the lowest old checkpoint (see docs/scaling.md, "Changing the partition count").',
      ),
    );
    try {
      // An old partition's owner that is stale (frozen past its lease) must not save after this: its
      // save would make the old layout look newest, and the next start would re-partition from it.
      for (const lease of held) {
        if (current.checkpoints.some((checkpoint) => checkpoint.name === lease.name)) await o.checkpoints.claim(lease.name, lease.fencingToken);
      }
      // An old partition that never saved a checkpoint starts where startFrom says (the beginning unless
      // it is a position: with 'end' there is no telling which head it would have taken).
      const complete = current.checkpoints.length >= checkpointsOf(current.count);
      const unsaved = typeof o.startFrom === 'object' ? o.startFrom.after : 0;
      const from = Math.min(...current.checkpoints.map((checkpoint) => checkpoint.position), ...(complete ? [] : [unsaved]));
      for (const name of names) await seed(o, name, from);
      o.logger.warn(
        { subscription: o.name, from: current.count, to: o.partitions, position: from },
        `${o.owner}: re-partitioned from ${describeCount(current.count)} to ${describeCount(o.partitions)}; it starts after position ${from}, ` +
          'the lowest checkpoint of the old ones: events between it and each old checkpoint are delivered again.',
      );
    } finally {
      await Promise.all(held.map((lease) => lease.release()));
    }
  } finally {
    await layoutLock?.release();
  }
}

/**
 * The old layout to start from, and the partitions of this count still to seed from it; undefined when
 * this count is in use (or none was ever used).
 *
 * A re-partition that stopped half-way (a transient failure between two seeds, a stop() that gave up
 * on it, a crash) leaves this count saved last with some partitions seeded and the others without a
 * checkpoint: those are seeded now from the layout used before, instead of starting from `startFrom`
 * (which with 'end' skipped their events, with 'beginning' delivered everything again). Every
 * partition of an adopted layout was seeded, so a missing one next to an older layout is that case.
 */
function toAdopt(all: readonly CheckpointInfo[], o: LayoutOptions): { current: Layout; names: string[] } | undefined {
  const [latest, ...older] = layoutsOf(all, o.name);
  if (latest === undefined) return undefined;
  if (latest.count !== o.partitions) return { current: latest, names: namesOf(o.name, o.partitions) };
  const previous = older[0];
  if (previous === undefined || latest.checkpoints.length >= checkpointsOf(latest.count)) return undefined;
  const seeded = new Set(latest.checkpoints.map((checkpoint) => checkpoint.name));
  return { current: previous, names: namesOf(o.name, o.partitions).filter((name) => !seeded.has(name)) };
}

/** The layouts of the runner's checkpoints, the one saved last (the one used most recently) first. */
export function layoutsOf(all: readonly CheckpointInfo[], name: string): Layout[] {
  const layouts = new Map<number, Layout>();
  for (const checkpoint of all) {
    const count = checkpoint.name === name ? UNPARTITIONED : parsePartitionName(name, checkpoint.name)?.partitions;
    if (count === undefined) continue;
    let layout = layouts.get(count);
    if (!layout) layouts.set(count, (layout = { count, checkpoints: [], lastSaved: -Infinity }));
    layout.checkpoints.push(checkpoint);
    layout.lastSaved = Math.max(layout.lastSaved, checkpoint.updatedAt.getTime());
  }
  // Stable: on a tie, the order of `all` decides, as it did when only the latest was picked.
  return [...layouts.values()].sort((a, b) => b.lastSaved - a.lastSaved);
}

/** How many checkpoints a layout of `count` has. */
function checkpointsOf(count: number): number {
  return count === UNPARTITIONED ? 1 : count;
}

export function namesOf(name: string, count: number): string[] {
  if (count === UNPARTITIONED) return [name];
  return Array.from({ length: count }, (_, partition) => partitionName(name, partition, count));
}

/**
 * Takes every lock of an old layout, or none: a held one means a node still runs it, and `refusal`
 * says so (an error naming the lock). Without leader election, there is nothing to take.
 */
export async function holdAll(locks: LockRegistry | undefined, names: readonly string[], refusal: (name: string) => Error): Promise<Lease[]> {
  if (!locks) return [];
  const held: Lease[] = [];
  try {
    for (const name of names) {
      const lease = await tryAcquire(locks, name);
      if (!lease) throw refusal(name);
      held.push(lease);
    }
    return held;
  } catch (error) {
    await Promise.all(held.map((lease) => lease.release()));
    throw error;
  }
}

/** The lock `name`, or undefined when another holder has it (a try-lock: no waiting). */
export async function tryAcquire(locks: LockRegistry, name: string): Promise<Lease | undefined> {
  const controller = new AbortController();
  try {
    return await locks.acquire(name, { signal: controller.signal, onWaiting: () => controller.abort() });
  } catch (error) {
    if (controller.signal.aborted) return undefined;
    throw error;
  }
}

/** Sets a new partition's checkpoint under its lock (so no node runs it meanwhile). */
async function seed(o: LayoutOptions, name: string, from: number): Promise<void> {
  if (!o.locks) {
    await o.checkpoints.save(name, from);
    return;
  }
  const lease = await tryAcquire(o.locks, name);
  // Held: a node with this count runs it already, from a checkpoint of its own.
  if (!lease) return;
  try {
    await o.checkpoints.claim(name, lease.fencingToken);
    await o.checkpoints.save(name, from, { fencingToken: lease.fencingToken });
  } finally {
    await lease.release();
  }
}

export function describeCount(count: number): string {
  return count === UNPARTITIONED ? 'no partitions' : count === 1 ? '1 partition' : `${count} partitions`;
}

/**
 * adoptLayout, waiting out transient failures (a database restarting) until `signal` fires; false
 * when it fired first. Throws what waiting will not heal (PartitionCountError among them).
 */
export async function adoptLayoutPatiently(o: LayoutOptions & { pollIntervalMs: number }): Promise<boolean> {
  for (let attempt = 1; !o.signal.aborted; attempt++) {
    try {
      // A database that stopped answering must not hold a stop(): the check is given up at once.
      return await unlessAborted(adoptLayout(o).then(() => true), o.signal, false);
    } catch (error) {
      if (o.signal.aborted) return false;
      if (!isTransient(error)) throw error;
      o.logger.warn({ subscription: o.name, attempt, err: error }, `${o.owner}: checking its partition count failed; retrying`);
      await delay(o.pollIntervalMs, o.signal).catch(() => undefined);
    }
  }
  return false;
}
