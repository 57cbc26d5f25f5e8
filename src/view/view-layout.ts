// A SQL view started with a partition count other than the one its checkpoints were saved with.
//
// A subscription re-partitions by starting every new partition from the lowest old checkpoint, and
// delivers what lies between it and each old checkpoint again (src/subscription/partition/layout.ts).
// A view cannot: applying an event twice counts it twice. So before the new count starts, each old
// partition applies its own events (with its own lease, in its own transactions, as it would have)
// up to the highest old checkpoint; then every old checkpoint is at one position, and the new lanes
// start exactly there. Nothing is lost, nothing is applied twice.
import type { CheckpointInfo } from '../core/checkpoint.js';
import { ErrorCode, HandlerFailedError, isEskitError, PartitionCountError } from '../core/errors.js';
import type { EventShape, Recorded } from '../core/event.js';
import type { Lease, LockRegistry } from '../core/lock.js';
import type { Logger } from '../core/logger.js';
import type { EventStore } from '../core/store.js';
import type { SqlViewBackend } from '../core/view-backend.js';
import { parsePartitionName, partitionName, partitionOf } from '../subscription/partition/naming.js';
import { applyPinned } from './sql-rebuild.js';
import type { PinnedFailures } from './sql-rebuild.js';

export interface LayoutStep<E extends EventShape> {
  name: string;
  /** The count this node starts with; 1: unpartitioned. */
  partitions: number;
  partitionKey: (event: Recorded<E>) => string;
  /** The checkpoints of this node's lanes. */
  names: readonly string[];
  /** Undefined: no leader election, nothing else runs the view. */
  locks: LockRegistry | undefined;
  backend: SqlViewBackend<E>;
  store: EventStore<E>;
  types: readonly E['type'][] | undefined;
  batchSize: number;
  failures: Omit<PinnedFailures<E>, 'source' | 'fail' | 'doing' | 'signal'>;
  logger: Logger;
}

/** One way of splitting the view: `count` 1 is the unpartitioned checkpoint. */
interface Layout {
  count: number;
  rows: CheckpointInfo[];
  lastSaved: number;
}

/**
 * Brings the view's checkpoints in line with this node's partition count (see the file comment).
 * Refused (PartitionCountError) while a node still holds a lane of the old count. A swap in between
 * (a rebuild) fences the catch-up: it starts over, from the checkpoints the swap set.
 */
export async function settleLayout<E extends EventShape>(o: LayoutStep<E>): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await settleOnce(o);
      return;
    } catch (error) {
      if (attempt >= 3 || !isEskitError(error, ErrorCode.Fenced)) throw error;
    }
  }
}

async function settleOnce<E extends EventShape>(o: LayoutStep<E>): Promise<void> {
  // The usual start: the count did not change, and this costs one read.
  if (!stale(latestLayout(await o.backend.listCheckpoints(), o.name), o.partitions)) return;
  // Nodes starting at once serialise here (the partition set takes the same lock after this).
  const layoutLock = o.locks ? await o.locks.acquire(`${o.name}#layout`) : undefined;
  try {
    const current = latestLayout(await o.backend.listCheckpoints(), o.name);
    if (!current || !stale(current, o.partitions)) return;
    const old = namesOf(o.name, current.count);
    const held = await holdAll(o, old, current.count);
    try {
      const generation = (await o.backend.readMeta())?.generation ?? -1;
      const target = Math.max(...current.rows.map((row) => row.position));
      let applied = 0;
      for (const [partition, lane] of old.entries()) {
        applied += await catchUp(o, { lane, partition, count: current.count, target, generation, token: held[partition]?.fencingToken });
      }
      for (const lane of o.names) await seed(o, lane, target, generation);
      o.logger.warn(
        { view: o.name, from: current.count, to: o.partitions, position: target, applied },
        `View "${o.name}": re-partitioned from ${describeCount(current.count)} to ${describeCount(o.partitions)}. The old lanes first applied their own events ` +
          `up to position ${target} (${applied} events), where every new lane starts: each event is applied once.`,
      );
    } finally {
      await Promise.all(held.map((lease) => lease?.release()));
    }
  } finally {
    await layoutLock?.release();
  }
}

function stale(layout: Layout | undefined, partitions: number): layout is Layout {
  return layout !== undefined && layout.count !== partitions;
}

/** The layout whose checkpoints were saved last: the one the view ran with most recently. */
function latestLayout(rows: readonly CheckpointInfo[], name: string): Layout | undefined {
  const layouts = new Map<number, Layout>();
  for (const row of rows) {
    const count = row.name === name ? 1 : parsePartitionName(name, row.name)?.partitions;
    if (count === undefined) continue;
    let layout = layouts.get(count);
    if (!layout) layouts.set(count, (layout = { count, rows: [], lastSaved: -Infinity }));
    layout.rows.push(row);
    layout.lastSaved = Math.max(layout.lastSaved, row.updatedAt.getTime());
  }
  let latest: Layout | undefined;
  for (const layout of layouts.values()) if (!latest || layout.lastSaved > latest.lastSaved) latest = layout;
  return latest;
}

function namesOf(name: string, count: number): string[] {
  if (count === 1) return [name];
  return Array.from({ length: count }, (_, partition) => partitionName(name, partition, count));
}

/**
 * Applies the old lane's events after its checkpoint up to `target`, then moves its checkpoint there.
 * A lane without a checkpoint never applied anything: a view starts from the beginning.
 */
async function catchUp<E extends EventShape>(
  o: LayoutStep<E>,
  at: { lane: string; partition: number; count: number; target: number; generation: number; token: number | undefined },
): Promise<number> {
  const { backend } = o;
  const { lane, token, generation } = at;
  const from = (token === undefined ? await backend.loadCheckpoint(lane) : await backend.claimCheckpoint(lane, token)) ?? 0;
  if (from >= at.target) return 0;
  const failures: PinnedFailures<E> = {
    ...o.failures,
    source: lane,
    doing: 'the partition count change',
    fail: (event, error, attempts) => new HandlerFailedError(lane, event.position, attempts, error),
  };
  const apply = (events: readonly Recorded<E>[]): Promise<void> => backend.applyLive(events, generation, token, lane);
  let applied = 0;
  // Page by page, each read to its end before anything is written (SQLite cannot write on a connection
  // while a read of it is open).
  for (let position = from; position < at.target; ) {
    const page: Recorded<E>[] = [];
    for await (const event of o.store.readAll({ after: position, limit: o.batchSize, types: o.types })) page.push(event);
    if (page.length === 0) break;
    position = (page[page.length - 1] as Recorded<E>).position;
    const own = page.filter(
      (event) => event.position <= at.target && (at.count === 1 || partitionOf(o.partitionKey(event), at.count) === at.partition),
    );
    if (own.length > 0) await applyPinned(own, apply, failures);
    applied += own.length;
  }
  await backend.saveCheckpoint(lane, at.target, generation, token);
  return applied;
}

/** Sets a new lane's checkpoint under its lock; one held already runs with this count, from its own. */
async function seed<E extends EventShape>(o: LayoutStep<E>, lane: string, position: number, generation: number): Promise<void> {
  if (!o.locks) {
    await o.backend.saveCheckpoint(lane, position, generation, undefined);
    return;
  }
  const lease = await tryAcquire(o.locks, lane);
  if (!lease) return;
  try {
    await o.backend.claimCheckpoint(lane, lease.fencingToken);
    await o.backend.saveCheckpoint(lane, position, generation, lease.fencingToken);
  } finally {
    await lease.release();
  }
}

/** Every lock of the old layout, or a refusal: a held one means a node still runs it. */
async function holdAll<E extends EventShape>(o: LayoutStep<E>, names: readonly string[], count: number): Promise<Array<Lease | undefined>> {
  const { locks } = o;
  if (!locks) return names.map(() => undefined);
  const held: Lease[] = [];
  try {
    for (const name of names) {
      const lease = await tryAcquire(locks, name);
      if (!lease) {
        throw new PartitionCountError(
          `SqlView "${o.name}": its checkpoints were saved with ${describeCount(count)}, and a node still runs "${name}". ` +
            `Stop every node that runs it with ${describeCount(count)}, then start the nodes with ${describeCount(o.partitions)}: ` +
            'the old lanes then catch up to one position, where the new ones start (see docs/views.md, "Partitioned views").',
        );
      }
      held.push(lease);
    }
    return held;
  } catch (error) {
    await Promise.all(held.map((lease) => lease.release()));
    throw error;
  }
}

/** The lock, or undefined when another holder has it (no waiting). */
async function tryAcquire(locks: LockRegistry, name: string): Promise<Lease | undefined> {
  const controller = new AbortController();
  try {
    return await locks.acquire(name, { signal: controller.signal, onWaiting: () => controller.abort() });
  } catch (error) {
    if (controller.signal.aborted) return undefined;
    throw error;
  }
}

function describeCount(count: number): string {
  return count === 1 ? 'no partitions' : `${count} partitions`;
}
