import { InvalidArgumentError } from '../../core/errors.js';

/**
 * The runner name of one partition: it names the partition's checkpoint, lock, dead letters,
 * completion records and status row, e.g. `mailer#3/16`. The count is part of the name, so that
 * checkpoints of another partitioning are never mistaken for this one's.
 */
export function partitionName(name: string, partition: number, partitions: number): string {
  return `${name}#${partition}/${partitions}`;
}

/** The partition a runner name stands for, when it is one of `name`'s. */
export function parsePartitionName(name: string, candidate: string): { partition: number; partitions: number } | undefined {
  if (!candidate.startsWith(`${name}#`)) return undefined;
  const match = /^(\d+)\/(\d+)$/.exec(candidate.slice(name.length + 1));
  if (!match) return undefined;
  const partition = Number(match[1]);
  const partitions = Number(match[2]);
  if (!(partition < partitions)) return undefined;
  return { partition, partitions };
}

/** The largest partition count: each partition is a runner with a lease, a checkpoint and a status row. */
export const MAX_PARTITIONS = 1024;

export function checkPartitions(owner: string, partitions: unknown): number {
  if (typeof partitions !== 'number' || !Number.isSafeInteger(partitions) || partitions < 1 || partitions > MAX_PARTITIONS) {
    throw new InvalidArgumentError(
      `${owner}: partitions must be an integer from 1 to ${MAX_PARTITIONS}, got ${String(partitions)}. ` +
        'Choose a power of two several times the number of nodes, e.g. 16 (see docs/scaling.md).',
    );
  }
  return partitions;
}

const encoder = new TextEncoder();

/**
 * The partition of a key: FNV-1a (32 bits) over its UTF-8 bytes, modulo the count. Stable across
 * processes, versions and languages, which the checkpoints depend on: never change it.
 */
export function partitionOf(key: string, partitions: number): number {
  let hash = 0x811c9dc5;
  for (const byte of encoder.encode(key)) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0) % partitions;
}
