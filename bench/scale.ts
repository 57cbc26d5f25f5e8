// The `scale` group (PostgreSQL): partitioned subscriptions and automations run by node processes
// (bench/fixtures/scale-node.ts), each a postgres() backend with leader election and its member
// registry at their defaults. The handler (the automation's execute) waits HANDLER_MS on a timer, a
// stand-in for a downstream call, at most CAP calls at once per node process (one semaphore shared by
// all its partitions), on both sides of every figure.
//
// - scale.subscription.partitioned: a backlog over many streams, 16 partitions, 4 node processes
//   (value) against 1 (baseline); events/s from the moment the partitions have settled (each held by
//   one node, none over its share) until every event is handled. Until then each event waits at a
//   gate, so both sides time the whole backlog; the settle time is in the line.
// - scale.subscription.partitioned.single: one node, 16 partitions (value) against none (baseline).
// - scale.automation.partitioned: the first figure with an Automation: the trigger makes one item per
//   event keyed by its stream id, execute waits HANDLER_MS under the cap.
// - scale.rebalance.join / .leave: bench/scale-rebalance.ts.
// The node processes are started once for the group; every round of a throughput figure seeds a
// schema of its own.
import type { Figure, Round, RoundSample } from './lib/measure.js';
import { compare, concurrent, figureJson } from './lib/measure.js';
import { BenchRun } from './lib/context.js';
import type { BenchContext, BenchGroup } from './lib/context.js';
import { median, significant } from './lib/stats.js';
import { all, CAP, HANDLER_MS, NodeProcess, now, PARTITIONS, untilSettled, waitUntil } from './lib/scale-nodes.js';
import type { NodeRun } from './fixtures/scale-node.js';
import { joinFigure, leaveFigure, JOIN, LEAVE } from './scale-rebalance.js';
import { EVENT, openPostgresBackend } from './subscription.js';
import type { PostgresBackend } from './subscription.js';

/** Node processes: the most any figure runs. */
const NODES = 4;

const SUBSCRIPTION = 'scale.subscription.partitioned.postgres';
const SINGLE = 'scale.subscription.partitioned.single.postgres';
const AUTOMATION = 'scale.automation.partitioned.postgres';

interface Side {
  nodes: number;
  /** Undefined: unpartitioned. */
  partitions: number | undefined;
}

interface ThroughputSpec {
  bench: string;
  kind: NodeRun['kind'];
  unit: string;
  eskit: Side;
  baseline: Side;
  events: number;
  streams: number;
  baselineLabel: string;
  target?: number;
  note: string;
}

export const scaleBench: BenchGroup = async (ctx) => {
  const events = ctx.pick(1_200, 20_000);
  const streams = ctx.pick(120, 1_000);
  const partitioned = (nodes: number): Side => ({ nodes, partitions: PARTITIONS });
  const gain = `${PARTITIONS} partitions, handler ${HANDLER_MS} ms (a timer), at most ${CAP} handler calls in flight per node process`;
  const throughput: ThroughputSpec[] = [
    {
      bench: SUBSCRIPTION,
      kind: 'subscription',
      unit: 'events/s',
      eskit: partitioned(NODES),
      baseline: partitioned(1),
      events,
      streams,
      baselineLabel: `the same, 1 node process`,
      target: 3.2,
      note: `${NODES} node processes against 1, ${gain}; ${events} events over ${streams} streams, timed from the settled partitions to the last event handled`,
    },
    {
      bench: SINGLE,
      kind: 'subscription',
      unit: 'events/s',
      eskit: partitioned(1),
      baseline: { nodes: 1, partitions: undefined },
      // The unpartitioned side handles one event at a time: a smaller backlog keeps its rounds short.
      events: ctx.pick(600, 6_000),
      streams: ctx.pick(60, 600),
      baselineLabel: 'the same node unpartitioned (one event at a time)',
      note: `one node process, ${gain}, against no partitions (the same cap, which one event at a time never reaches)`,
    },
    {
      bench: AUTOMATION,
      kind: 'automation',
      unit: 'items/s',
      eskit: partitioned(NODES),
      baseline: partitioned(1),
      events,
      streams,
      baselineLabel: `the same, 1 node process`,
      target: 3.2,
      note:
        `${NODES} node processes against 1, ${gain.replace('handler', 'execute')}; one item per event keyed by its stream id, default settings ` +
        `(concurrency 8 per partition, completions on); ${events} events over ${streams} streams`,
    },
  ];
  const rebalance: Array<[string, (ctx: BenchContext, nodes: NodeProcess[]) => Promise<void>]> = [
    [JOIN, joinFigure],
    [LEAVE, leaveFigure],
  ];
  if (!throughput.some((spec) => ctx.selected(spec.bench)) && !rebalance.some(([name]) => ctx.selected(name))) return;

  const nodes = Array.from({ length: NODES }, (_, index) => new NodeProcess(ctx, index, ctx.postgresUrl));
  try {
    await Promise.all(nodes.map((node) => node.next('ready', 0, `node process ${node.index} to start`, 60_000)));
    for (const spec of throughput) {
      if (!ctx.selected(spec.bench)) continue;
      try {
        await throughputFigure(ctx, nodes, spec);
      } catch (error) {
        ctx.fail(spec.bench, error);
      }
    }
    for (const [name, run] of rebalance) {
      if (!ctx.selected(name)) continue;
      try {
        await run(ctx, nodes);
      } catch (error) {
        ctx.fail(name, error);
      }
    }
  } finally {
    await Promise.all(nodes.map((node) => node.end()));
  }
};

// ---------------------------------------------------------------------------------------------------
// Throughput

async function throughputFigure(ctx: BenchContext, pool: readonly NodeProcess[], spec: ThroughputSpec): Promise<void> {
  const settle: Record<'eskit' | 'baseline', number[]> = { eskit: [], baseline: [] };
  let duplicates = 0;
  let rounds = 0;
  const round =
    (side: Side, which: 'eskit' | 'baseline'): Round =>
    async (ops) => {
      // compare()'s warm-up round (0 ops): the processes are up and connect before each round's timing.
      if (ops === 0) return { units: 0, elapsedNs: 0, latenciesNs: [] };
      const result = await throughputRound(ctx, pool.slice(0, side.nodes), spec, side, `${rounds++}`);
      settle[which].push(result.settleMs);
      duplicates += result.duplicates;
      ctx.log(
        `  ${spec.bench} ${which} (${side.nodes} node${side.nodes === 1 ? '' : 's'}, ${side.partitions ?? 'no'} partitions): ` +
          `${Math.round(result.sample.units / (result.sample.elapsedNs / 1e9))} ${spec.unit}, settled in ${Math.round(result.settleMs)} ms` +
          (result.duplicates > 0 ? `, ${result.duplicates} handled twice` : ''),
      );
      return result.sample;
    };
  const figure = await compare({
    bench: spec.bench,
    unit: spec.unit,
    ops: spec.events,
    warmupOps: 0,
    rounds: ctx.pick(1, 3),
    eskit: round(spec.eskit, 'eskit'),
    baseline: round(spec.baseline, 'baseline'),
    baselineLabel: spec.baselineLabel,
    ...(spec.target === undefined ? {} : { target: spec.target }),
    note: spec.note,
  });
  emit(ctx, figure, {
    settle_ms: significant(median(settle.eskit)),
    baseline_settle_ms: significant(median(settle.baseline)),
    events: spec.events,
    streams: spec.streams,
    nodes: spec.eskit.nodes,
    baseline_nodes: spec.baseline.nodes,
    partitions: spec.eskit.partitions ?? 1,
    baseline_partitions: spec.baseline.partitions ?? 1,
    cap: CAP,
    handler_ms: HANDLER_MS,
    duplicates,
  });
}

/** Prints a throughput figure's JSON line with `extras`, and keeps it for the run's table. */
function emit(ctx: BenchContext, figure: Figure, extras: Record<string, unknown>): void {
  if (!ctx.selected(figure.bench)) return;
  if (ctx instanceof BenchRun) ctx.figures.push(figure);
  process.stdout.write(`${JSON.stringify({ ...(JSON.parse(figureJson(figure)) as Record<string, unknown>), ...extras })}\n`);
  ctx.log(
    `${figure.bench}: ${Math.round(figure.value)} vs ${Math.round(figure.baseline)} ${figure.unit}, ratio ${figure.ratio.toFixed(3)}` +
      `${figure.target === undefined ? '' : ` (target >= ${figure.target}: ${figure.ratio >= figure.target ? 'ok' : 'MISSED'})`}, settled in ${String(extras.settle_ms)} vs ${String(extras.baseline_settle_ms)} ms`,
  );
}

interface ThroughputRound {
  sample: RoundSample;
  settleMs: number;
  duplicates: number;
}

/**
 * One side's round: a fresh schema seeded with the backlog; the nodes open the runner and start; once
 * the partitions have settled they all get "go", and the round ends with the last event of the
 * backlog handled. Throughput = events / (last handled − go); latencies are the handler's times.
 */
async function throughputRound(ctx: BenchContext, nodes: readonly NodeProcess[], spec: ThroughputSpec, side: Side, tag: string): Promise<ThroughputRound> {
  const backend = await openPostgresBackend(ctx, `scale_${tag}`);
  try {
    const head = await seedBacklog(backend, spec.events, spec.streams);
    const run: NodeRun = {
      schema: backend.schema,
      kind: spec.kind,
      name: `scale-${spec.kind}`,
      partitions: side.partitions,
      cap: CAP,
      handlerMs: HANDLER_MS,
      gate: true,
    };
    await all(nodes, { cmd: 'open', run }, 'opened');
    try {
      const marks = nodes.map((node) => node.mark);
      for (const node of nodes) node.send({ cmd: 'start' });
      const settled = await untilSettled(nodes, side.partitions ?? 1);
      const started = Math.min(...nodes.map((node, i) => Number(node.find('starting', marks[i] as number)?.at ?? Infinity)));
      const seen = new Uint8Array(head + 1);
      let handled = 0;
      let duplicates = 0;
      let end = 0;
      const latenciesNs: number[] = [];
      for (const node of nodes) {
        node.onHandled = (line) => {
          const positions = line.positions as number[];
          const ms = line.ms as number[];
          positions.forEach((position, i) => {
            latenciesNs.push((ms[i] as number) * 1e6);
            if (seen[position] === 1) duplicates++;
            else {
              seen[position] = 1;
              handled++;
            }
          });
          if (handled === spec.events && end === 0) end = Number(line.at);
        };
      }
      const goMarks = nodes.map((node) => node.mark);
      const go = now();
      for (const node of nodes) node.send({ cmd: 'go' });
      // Generous: a whole backlog at a tenth of one node's cap.
      const timeoutMs = 60_000 + (spec.events / ((CAP * 1000) / HANDLER_MS)) * 10_000;
      await waitUntil(nodes, () => handled === spec.events, `${spec.events} events handled`, timeoutMs, goMarks);
      return { sample: { units: spec.events, elapsedNs: (end - go) * 1e6, latenciesNs }, settleMs: settled - started, duplicates };
    } finally {
      for (const node of nodes) node.onHandled = undefined;
      await all(nodes, { cmd: 'close' }, 'closed');
    }
  } finally {
    await backend.close();
  }
}

/**
 * `events` events, one per append, going round `streams` streams (so that every page of the log holds
 * events of many keys, as a live log does), appended by 8 writers; returns the head.
 */
async function seedBacklog(backend: PostgresBackend, events: number, streams: number): Promise<number> {
  let next = 0;
  await concurrent(8, async () => (await backend.store.append(`s-${next++ % streams}`, [EVENT])).events.length)(events);
  await backend.pool.query(`VACUUM ANALYZE "${backend.schema}".events`);
  const head = await backend.store.headPosition();
  if (head !== events) throw new Error(`seeded ${events} events, the head is ${head}`);
  return head;
}
