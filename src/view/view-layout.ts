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
import type { LockRegistry } from '../core/lock.js';
import type { Logger } from '../core/logger.js';
import type { EventStore } from '../core/store.js';
import type { SqlViewBackend } from '../core/view-backend.js';
import { describeCount, holdAll, layoutsOf, namesOf, tryAcquire } from '../subscription/partition/layout.js';
import type { Layout } from '../subscription/partition/layout.js';
import { partitionOf } from '../subscription/partition/naming.js';
import { applyPinned } from './sql-rebuild.js';
import type { PinnedFailures } from './sql-rebuild.js';

export interface LayoutStep<E extends EventShape> {
  name: string;
  /** The count this node starts with: UNPARTITIONED (0) for none, apart from `partitions: 1`. */
  partitions: number;
  partitionKey: (event: Recorded<E>) => string;
  /** The checkpoints of this node's lanes. */
  names: readonly string[];
  /** Undefined: no leader election, nothing else runs the view. */
  locks: LockRegistry | undefined;
  backend: SqlViewBackend<E>;
  store: EventStore<E>;
  types: readonly E['type'][] | undefined;
  category: string | undefined;
  batchSize: number;
  failures: Omit<PinnedFailures<E>, 'source' | 'fail' | 'doing' | 'signal'>;
  logger: Logger;
  /** stop() was called: stop waiting for another node's count change. */
  signal?: AbortSignal;
}

/** One step: the lanes of the count `from` catch up to `target`, where the lanes `names` (of the count `to`) start. */
interface Change {
  from: number;
  to: number;
  target: number;
  names: readonly string[];
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
  if (changesOf(await o.backend.listCheckpoints(), o).length === 0) return;
  // Nodes starting at once serialise here (the partition set takes the same lock after this).
  const layoutLock = o.locks ? await o.locks.acquire(`${o.name}#layout`, { signal: o.signal }) : undefined;
  try {
    for (const change of changesOf(await o.backend.listCheckpoints(), o)) await apply(o, change);
  } finally {
    await layoutLock?.release();
  }
}

/**
 * What to do before this node's count runs, from the layouts the checkpoints hold (layout.ts's, where
 * no partitions, UNPARTITIONED, is a count apart from `partitions: 1`).
 *
 * A change cut short (a failure or a crash between two seeds) left the count saved last with some
 * lanes seeded and the others without a checkpoint, or with the one a former run with that count left
 * behind: it is completed first, from the layout before it (whose lanes it had caught up), as it would
 * have been. Taken as done, an unseeded lane started from the beginning, or from its old checkpoint,
 * and applied the events of its keys again. Then, when this node runs another count, that one's lanes
 * catch up as usual.
 */
function changesOf(rows: readonly CheckpointInfo[], o: Pick<LayoutStep<EventShape>, 'name' | 'partitions' | 'names'>): Change[] {
  const [latest, previous] = layoutsOf(rows, o.name);
  if (latest === undefined) return [];
  const highest = (layout: Layout): number => Math.max(...layout.checkpoints.map((checkpoint) => checkpoint.position));
  const changes: Change[] = [];
  let target = highest(latest);
  if (previous !== undefined) {
    // The change seeded its lanes where every old one had caught up, the highest old checkpoint, and
    // the old lanes stayed there. A lane behind it was not seeded: its checkpoint, if any, is the one a
    // former run with this count left (the time it was saved is no sign: taking its lock touches it).
    const from = highest(previous);
    const seeded = new Set(latest.checkpoints.filter((row) => row.position >= from).map((row) => row.name));
    const names = namesOf(o.name, latest.count).filter((name) => !seeded.has(name));
    if (names.length > 0) changes.push({ from: previous.count, to: latest.count, target: from, names });
    target = Math.max(target, from);
  }
  if (latest.count !== o.partitions) changes.push({ from: latest.count, to: o.partitions, target, names: o.names });
  return changes;
}

async function apply<E extends EventShape>(o: LayoutStep<E>, change: Change): Promise<void> {
  const { from, to, target } = change;
  const old = namesOf(o.name, from);
  const held = await holdAll(o.locks, old, (name) =>
    new PartitionCountError(
      `SqlView "${o.name}": its checkpoints were saved with ${describeCount(from)}, and a node still runs "${name}". ` +
        `Stop every node that runs it with ${describeCount(from)}, then start the nodes with ${describeCount(o.partitions)}: ` +
        'the old lanes then catch up to one position, where the new ones start (see docs/views.md, "Partitioned views").',
    ),
  );
  try {
    const generation = (await o.backend.readMeta())?.generation ?? -1;
    let applied = 0;
    for (const [partition, lane] of old.entries()) {
      applied += await catchUp(o, { lane, partition, count: from, target, generation, token: held[partition]?.fencingToken });
    }
    for (const lane of change.names) await seed(o, lane, target, generation);
    const what = to === o.partitions ? 're-partitioned' : 'completed a partition count change cut short,';
    o.logger.warn(
      { view: o.name, from, to, position: target, applied },
      `View "${o.name}": ${what} from ${describeCount(from)} to ${describeCount(to)}. The old lanes first applied their own events ` +
        `up to position ${target} (${applied} events), where the new lanes start: each event is applied once.`,
    );
  } finally {
    await Promise.all(held.map((lease) => lease.release()));
  }
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
    for await (const event of o.store.readAll({ after: position, limit: o.batchSize, types: o.types, category: o.category })) page.push(event);
    if (page.length === 0) break;
    position = (page[page.length - 1] as Recorded<E>).position;
    const own = page.filter(
      (event) => event.position <= at.target && (at.count <= 1 || partitionOf(o.partitionKey(event), at.count) === at.partition),
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
