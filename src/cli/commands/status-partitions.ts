import type { NodeEntry, PartitionEntry, StatusEntry } from './status-report.js';

/** A row is live while its process says it runs and keeps its heartbeat. */
export function isLive(node: NodeEntry): boolean {
  return !node.stale && (node.state === 'running' || node.state === 'stopping');
}

/**
 * A partitioned runner leaves one checkpoint, lock, dead-letter source and status row per partition,
 * each named `<name>#<partition>/<partitions>` (src/subscription/partition/naming.ts). `status` shows
 * them under one entry per runner: its partitions one by one, and who leads how many.
 */
export function splitPartitionName(name: string): { base: string; partition: number; count: number } | undefined {
  const match = /^(.+)#(\d+)\/(\d+)$/.exec(name);
  if (!match) return undefined;
  const partition = Number(match[2]);
  const count = Number(match[3]);
  if (!(partition < count)) return undefined;
  return { base: match[1] as string, partition, count };
}

/** The node leading a partition: its lock's holder, else the live status row that says it leads. */
function ownerOf(entry: StatusEntry): string | null {
  if (entry.state === 'leading') {
    if (entry.leader?.holder) return entry.leader.holder;
    const leader = entry.nodes.find((node) => isLive(node) && node.role === 'leader');
    return leader?.nodeId ?? (entry.leader?.pid ? `pid ${entry.leader.pid}` : 'an unknown node');
  }
  // No lock row (SQLite's lease not written yet, a lock in another schema): a live leader's word.
  if (entry.state === 'unknown' || entry.state === 'unelected') {
    return entry.nodes.find((node) => isLive(node) && node.role === 'leader')?.nodeId ?? null;
  }
  return null;
}

const ROLE_RANK: Record<NodeEntry['role'], number> = { leader: 4, unelected: 3, 'denied-standby': 2, standby: 1, none: 0 };

/** One node's rows over the partitions: what it leads, its counters summed, its freshest heartbeat. */
function nodeOverPartitions(nodeId: string, lanes: readonly PartitionEntry[]): NodeEntry {
  const rows = lanes.flatMap((lane) => lane.nodes.filter((node) => node.nodeId === nodeId).map((node) => ({ lane, node })));
  const live = rows.filter(({ node }) => isLive(node));
  const leads = live.filter(({ node }) => node.role === 'leader').map(({ lane }) => lane.partition);
  const freshest = [...rows].sort((a, b) => a.node.heartbeatAgeMs - b.node.heartbeatAgeMs)[0]?.node as NodeEntry;
  // Running while any of its partitions runs here; stale only when every running row went silent.
  const running = rows.filter(({ node }) => node.state === 'running' || node.state === 'stopping');
  const state = running.some(({ node }) => !node.stale)
    ? running.some(({ node }) => node.state === 'running')
      ? 'running'
      : 'stopping'
    : running.length > 0
      ? 'running'
      : rows.some(({ node }) => node.state === 'failed')
        ? 'failed'
        : 'stopped';
  // A silent node: the role its rows last claimed (the stale mark says it may be gone).
  const claimed = live.length > 0 ? live : running;
  const role = claimed.map(({ node }) => node.role).sort((a, b) => ROLE_RANK[b] - ROLE_RANK[a])[0] ?? 'none';
  const positions = claimed.filter(({ node }) => node.role === 'leader' && node.position !== null).map(({ node }) => node.position as number);
  const lastEvents = rows.map(({ node }) => node.lastEvent).filter((event) => event !== null);
  const works = live.map(({ node }) => node.work).filter((work) => work !== null);
  const sum = (key: 'pending' | 'running' | 'hung' | 'retrying' | 'unrecorded'): number => works.reduce((total, work) => total + work[key], 0);
  const oldest = works.map((work) => work.oldestPendingMs).filter((ms) => ms !== null);
  const errors = [...rows].filter(({ node }) => node.lastError !== null).sort((a, b) => a.node.heartbeatAgeMs - b.node.heartbeatAgeMs);
  return {
    nodeId,
    kind: freshest.kind,
    state,
    role,
    stale: running.length > 0 && running.every(({ node }) => node.stale),
    heartbeatAt: freshest.heartbeatAt,
    heartbeatAgeMs: freshest.heartbeatAgeMs,
    heartbeatMs: freshest.heartbeatMs,
    fencingToken: null,
    position: positions.length === 0 ? null : Math.min(...positions),
    handled: rows.reduce((total, { node }) => total + node.handled, 0),
    lastEvent: lastEvents.sort((a, b) => a.ageMs - b.ageMs)[0] ?? null,
    work:
      works.length === 0
        ? null
        : { pending: sum('pending'), running: sum('running'), hung: sum('hung'), retrying: sum('retrying'), unrecorded: sum('unrecorded'), oldestPendingMs: oldest.length === 0 ? null : Math.max(...oldest) },
    lastError: errors[0]?.node.lastError ?? null,
    leads: leads.sort((a, b) => a - b),
  };
}

/** The entry of one layout (a runner with one partition count) made of its partitions' entries. */
function groupEntry(base: string, count: number, lanes: PartitionEntry[]): StatusEntry {
  lanes.sort((a, b) => a.partition - b.partition);
  const positions = lanes.map((lane) => lane.position).filter((position) => position !== null);
  const position = positions.length === 0 ? null : Math.min(...positions);
  const head = lanes[0]?.head ?? 0;
  const nodeIds = [...new Set(lanes.flatMap((lane) => lane.nodes.map((node) => node.nodeId)))].sort();
  const owners = new Map<string, number[]>();
  for (const lane of lanes) if (lane.owner !== null) owners.set(lane.owner, [...(owners.get(lane.owner) ?? []), lane.partition]);
  const owned = new Set(lanes.filter((lane) => lane.owner !== null).map((lane) => lane.partition));
  const updated = lanes.map((lane) => lane.updatedAt).filter((at) => at !== null).sort();
  const kinds = lanes.map((lane) => lane.kind).filter((kind) => kind !== 'unknown');
  const letters = lanes.reduce((sum, entry) => ({ dead: sum.dead + entry.deadLetters.dead, redrive: sum.redrive + entry.deadLetters.redrive }), { dead: 0, redrive: 0 });
  const states = new Set(lanes.map((lane) => lane.state));
  return {
    name: base,
    kind: kinds[0] ?? 'unknown',
    position,
    head,
    lag: position === null ? null : Math.max(0, head - position),
    // 'leading' only when every partition is led; else the lanes' word (no leader, unelected or unknown).
    state: owned.size === count ? 'leading' : states.has('leading') || states.has('no-leader') ? 'no-leader' : states.has('unelected') ? 'unelected' : 'unknown',
    leader: null,
    fencingToken: { lease: null, checkpoint: null },
    deadLetters: letters,
    view: null,
    updatedAt: updated.at(-1) ?? null,
    nodes: nodeIds.map((nodeId) => nodeOverPartitions(nodeId, lanes)),
    superseded: false,
    partitions: {
      count,
      owners: [...owners].map(([nodeId, partitions]) => ({ nodeId, partitions })).sort((a, b) => (a.nodeId < b.nodeId ? -1 : 1)),
      unowned: Array.from({ length: count }, (_, partition) => partition).filter((partition) => !owned.has(partition)),
      entries: lanes,
    },
  };
}

/** What marks the layout used last: its checkpoints' newest save (as the runner itself judges it, layout.ts). */
const lastSaved = (entries: readonly StatusEntry[]): number => Math.max(...entries.map((entry) => (entry.updatedAt === null ? -Infinity : Date.parse(entry.updatedAt))));

/**
 * Puts every partition's entry under one entry per runner and partition count, in name order. The
 * runner's own entry (same name, no partition) stays beside it when it has a checkpoint or status
 * rows (it ran unpartitioned before); when it only holds a view's row or dead letters, those are
 * folded into the group. Of a runner's layouts, all but the one saved last are `superseded`: left
 * from before a change of the partition count. The layout lock (`<name>#layout`) is not a runner.
 */
export function groupPartitions(flat: readonly StatusEntry[]): StatusEntry[] {
  const lanesOf = new Map<string, Map<number, PartitionEntry[]>>();
  const rest: StatusEntry[] = [];
  for (const entry of flat) {
    const lane = splitPartitionName(entry.name);
    if (!lane) {
      const layoutLock = entry.name.endsWith('#layout') && entry.position === null && entry.nodes.length === 0 && entry.deadLetters.dead + entry.deadLetters.redrive === 0;
      if (!layoutLock) rest.push(entry);
      continue;
    }
    const layouts = lanesOf.get(lane.base) ?? new Map<number, PartitionEntry[]>();
    lanesOf.set(lane.base, layouts);
    layouts.set(lane.count, [...(layouts.get(lane.count) ?? []), { ...entry, partition: lane.partition, owner: ownerOf(entry) }]);
  }
  const result = rest.filter((entry) => {
    if (!lanesOf.has(entry.name)) return true;
    return entry.position !== null || entry.nodes.length > 0;
  });
  for (const [base, layouts] of lanesOf) {
    const groups = [...layouts].map(([count, lanes]) => groupEntry(base, count, lanes));
    const unpartitioned = result.find((entry) => entry.name === base);
    const all = unpartitioned ? [...groups, unpartitioned] : groups;
    if (all.length > 1) {
      const latest = Math.max(...all.map((entry) => lastSaved(entry.partitions?.entries ?? [entry])));
      for (const entry of all) entry.superseded = lastSaved(entry.partitions?.entries ?? [entry]) < latest;
      // One name, one runner: what the layout in use declared is what the old ones were.
      const kind = all.find((entry) => !entry.superseded && entry.kind !== 'unknown')?.kind;
      for (const entry of all) if (entry.kind === 'unknown' && kind) entry.kind = kind;
    }
    // The runner's own name with no checkpoint of its own (a view's row, dead letters): the layout in use's.
    const host = rest.find((entry) => entry.name === base && !result.includes(entry));
    const current = groups.find((group) => !group.superseded);
    if (host && current) {
      current.deadLetters = { dead: current.deadLetters.dead + host.deadLetters.dead, redrive: current.deadLetters.redrive + host.deadLetters.redrive };
      current.view = host.view;
      if (host.view) current.kind = 'view';
    }
    result.push(...groups);
  }
  // Name order; of one runner, the layout in use first, then the others from the newest.
  const savedOf = (entry: StatusEntry): number => lastSaved(entry.partitions?.entries ?? [entry]);
  return result.sort((a, b) => (a.name !== b.name ? (a.name < b.name ? -1 : 1) : Number(a.superseded) - Number(b.superseded) || savedOf(b) - savedOf(a)));
}
