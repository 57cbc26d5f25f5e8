// `--partitions N`: the mailer runs as N partitions (`confirmation-mailer#<p>/<N>`), each with its own
// lock, checkpoint and dead letters, shared out over the workers: ceil(N / workers) each at most. This
// file reads who leads which partition from the workers' leadership reports, and says it: the map of
// the partitions over the workers, the moves when a worker stops, and the checks on them.
import { MAILER } from './mailer.js';
import type { Check, Handoff, Lead } from './report.js';

/** The lane's partition, when `name` is one of the mailer's partitions. */
export function mailerPartition(name: string): number | undefined {
  const match = new RegExp(`^${MAILER}#(\\d+)/(\\d+)$`).exec(name);
  return match ? Number(match[1]) : undefined;
}

/** Who leads which partition now (by the leads still open), as partition → worker. */
export function partitionOwners(leads: readonly Lead[]): Map<number, number> {
  const owners = new Map<number, { worker: number; token: number }>();
  for (const lead of leads) {
    const partition = mailerPartition(lead.name);
    if (partition === undefined || lead.to !== undefined) continue;
    const known = owners.get(partition);
    if (!known || lead.token > known.token) owners.set(partition, { worker: lead.worker, token: lead.token });
  }
  return new Map([...owners].map(([partition, { worker }]) => [partition, worker]));
}

/**
 * Every partition is led, by the given workers only, none over its share ceil(N / workers), and as
 * many workers lead as there are (or partitions): the sharing-out has settled.
 */
export function shared(owners: ReadonlyMap<number, number>, count: number, workers: readonly number[]): boolean {
  if (owners.size !== count) return false;
  const share = Math.ceil(count / workers.length);
  const held = byWorker(owners);
  if ([...held.keys()].some((worker) => !workers.includes(worker))) return false;
  return held.size === Math.min(count, workers.length) && [...held.values()].every((partitions) => partitions.length <= share);
}

/** worker → its partitions, in worker and partition order. */
export function byWorker(owners: ReadonlyMap<number, number>): Map<number, number[]> {
  const held = new Map<number, number[]>();
  for (const [partition, worker] of [...owners].sort((a, b) => a[0] - b[0])) held.set(worker, [...(held.get(worker) ?? []), partition]);
  return new Map([...held].sort((a, b) => a[0] - b[0]));
}

/** "#0-3 #6": partition numbers, runs of consecutive ones shortened. */
export function listPartitions(partitions: readonly number[]): string {
  const runs: string[] = [];
  for (let i = 0; i < partitions.length; ) {
    let j = i;
    while (j + 1 < partitions.length && (partitions[j + 1] as number) === (partitions[j] as number) + 1) j++;
    runs.push(j === i ? `#${partitions[i]}` : `#${partitions[i]}-${partitions[j]}`);
    i = j + 1;
  }
  return runs.join(' ');
}

/** "worker 1 #0-3, worker 2 #4-7": the map in one line. */
export function mapLine(owners: ReadonlyMap<number, number>): string {
  return [...byWorker(owners)].map(([worker, partitions]) => `worker ${worker} ${listPartitions(partitions)}`).join(', ') || 'none led';
}

/** The map, a line per worker, for the run's log. */
export function mapLines(owners: ReadonlyMap<number, number>, indent = '    '): string[] {
  return [...byWorker(owners)].map(([worker, partitions]) => `${indent}worker ${worker}  ${String(partitions.length).padStart(2)} partitions  ${listPartitions(partitions)}`);
}

/** Each partition's change of leader, from the leads in token order: who let go, who took it, and the gap. */
export function partitionMoves(leads: readonly Lead[]): Array<Handoff & { partition: number; at: number }> {
  const moves: Array<Handoff & { partition: number; at: number }> = [];
  const lanes = new Map<number, Lead[]>();
  for (const lead of leads) {
    const partition = mailerPartition(lead.name);
    if (partition !== undefined) lanes.set(partition, [...(lanes.get(partition) ?? []), lead]);
  }
  for (const [partition, chain] of lanes) {
    chain.sort((a, b) => a.token - b.token);
    for (let i = 1; i < chain.length; i++) {
      const before = chain[i - 1] as Lead;
      const after = chain[i] as Lead;
      if (before.to === undefined) continue;
      moves.push({ name: after.name, partition, from: before.worker, to: after.worker, token: after.token, gapMs: Math.max(0, after.from - before.to), at: after.from });
    }
  }
  return moves.sort((a, b) => a.at - b.at);
}

/** What the cluster saw of the partitions: the map before the stop, after it, and the moves between. */
export interface PartitionFacts {
  count: number;
  workers: number;
  /** The worker stopped halfway. */
  stopped: number;
  before: Map<number, number>;
  after: Map<number, number>;
  /** Date.now() when the stop was asked and when the handover was seen complete. */
  stopAt: number;
  settledAt: number;
}

/** The checks and the summary lines of the partitions, and their part of the JSON summary. */
export function partitionReport(facts: PartitionFacts, leads: readonly Lead[]): { checks: Check[]; lines: string[]; result: Record<string, unknown> } {
  const { count, workers, stopped, before, after } = facts;
  const checks: Check[] = [];
  const check = (name: string, ok: boolean, detail: string): void => void checks.push({ name, ok, detail });

  // No partition had two leaders at once: per partition, each lead ended (with a release) before the next began.
  const overlaps: string[] = [];
  for (let partition = 0; partition < count; partition++) {
    const chain = leads.filter((lead) => mailerPartition(lead.name) === partition).sort((a, b) => a.token - b.token);
    for (let i = 1; i < chain.length; i++) {
      const a = chain[i - 1] as Lead;
      const b = chain[i] as Lead;
      if (a.to === undefined || a.to > b.from || a.how === 'lost') overlaps.push(`#${partition}: worker ${a.worker} (token ${a.token}) and worker ${b.worker} (token ${b.token})`);
    }
  }
  const laneLeads = leads.filter((lead) => mailerPartition(lead.name) !== undefined);
  check(
    `one leader at a time for each of the ${count} partitions of ${MAILER}`,
    overlaps.length === 0 && new Set(laneLeads.map((lead) => lead.name)).size === count,
    overlaps.length > 0 ? `overlapping: ${overlaps.slice(0, 5).join('; ')}` : `${laneLeads.length} leads of ${count} partitions, none overlapping`,
  );
  const share = Math.ceil(count / workers);
  const afterShare = Math.ceil(count / (workers - 1));
  const spread = (owners: ReadonlyMap<number, number>, alive: number, most: number): boolean =>
    owners.size === count && byWorker(owners).size === Math.min(alive, count) && [...byWorker(owners).values()].every((p) => p.length <= most);
  check(
    `the partitions were shared out over the ${workers} workers`,
    spread(before, workers, share),
    `${mapLine(before)} (at most ceil(${count}/${workers}) = ${share} each)`,
  );
  const had = byWorker(before).get(stopped) ?? [];
  const moved = partitionMoves(leads).filter((move) => move.at >= facts.stopAt && move.at <= facts.settledAt);
  const stranded = had.filter((partition) => after.get(partition) === undefined || after.get(partition) === stopped);
  check(
    `the stopped worker's partitions moved to the others`,
    had.length > 0 && stranded.length === 0 && ![...after.values()].includes(stopped) && spread(after, workers - 1, afterShare),
    stranded.length > 0
      ? `not moved: ${listPartitions(stranded)}`
      : `worker ${stopped}'s ${listPartitions(had)}: ${moved
          .filter((move) => move.from === stopped)
          .map((move) => `#${move.partition} to worker ${move.to} in ${move.gapMs} ms`)
          .join(', ')}`,
  );

  const lines = [
    `Partitions   ${MAILER}: ${count} partitions keyed by order id, over ${workers} workers (at most ${share} each)`,
    `               before worker ${stopped} stopped  ${mapLine(before)}`,
    `               after                    ${mapLine(after)}`,
    // Those of the stopped worker, and any a worker over its share then handed on.
    `               moved                    ${moved.map((move) => `#${move.partition} worker ${move.from} → ${move.to} (${move.gapMs} ms)`).join(', ') || '-'}`,
  ];
  const asObject = (owners: ReadonlyMap<number, number>): Record<string, number[]> => Object.fromEntries([...byWorker(owners)].map(([worker, partitions]) => [worker, partitions]));
  const result = {
    count,
    stopped,
    before: asObject(before),
    after: asObject(after),
    moved: moved.map(({ partition, from, to, token, gapMs }) => ({ partition, from, to, token, gapMs })),
  };
  return { checks, lines, result };
}
