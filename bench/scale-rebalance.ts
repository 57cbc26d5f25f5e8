// The `scale` group's rebalance figures (see bench/scale.ts): how fast partitions move between node
// processes (bench/fixtures/scale-node.ts), a partitioned Subscription of PARTITIONS partitions at
// default settings (rebalanceIntervalMs, lock registry), the handler HANDLER_MS under the node's CAP.
//
// - scale.rebalance.join: 3 nodes share the partitions while writers append ~WRITE_RATE events/s; a 4th
//   starts. From its start() call to its handler's first event (all its partitions are newly owned:
//   the others drain, save and release what is over their new share, and it takes them). It then stops
//   again and the 3 settle before the next sample.
// - scale.rebalance.leave: 4 nodes hold 4 partitions each; every partition of one of them has an event
//   its handler is busy with (held until its signal fires, as bench/leadership.ts's leader does). From
//   its stop() call to the last of those events reaching another node's handler. It starts again and
//   the 4 settle before the next sample (the stopping node goes round).
// Both: times on CLOCK_MONOTONIC in the node processes. Baseline: the raw floor of one move, a raw
// unlock → a blocked pg_advisory_lock on another connection returns (leadership.handoff's baseline).
import type { EventStore } from '../src/core/store.js';
import { partitionOf } from '../src/subscription/partition/naming.js';
import type { NodeRun } from './fixtures/scale-node.js';
import type { BenchContext } from './lib/context.js';
import { median, significant } from './lib/stats.js';
import { all, CAP, HANDLER_MS, HOLD_TYPE, now, PARTITIONS, untilSettled, waitUntil } from './lib/scale-nodes.js';
import type { Line, NodeProcess } from './lib/scale-nodes.js';
import { rawHandoffBaseline } from './leadership.js';
import { EVENT, measureLatency, openPostgresBackend } from './subscription.js';
import type { LatencyRound, PostgresBackend } from './subscription.js';

export const JOIN = 'scale.rebalance.join.postgres';
export const LEAVE = 'scale.rebalance.leave.postgres';

/** Events per second the writers append during the join figure, in total. */
const WRITE_RATE = 200;
/** Streams the writers pick from at random. */
const WRITE_STREAMS = 1_000;

const RAW_LABEL = 'pg: unlock → a blocked pg_advisory_lock returns (two raw clients): the floor of one move';

function run(schema: string, name: string): NodeRun {
  return { schema, kind: 'subscription', name, partitions: PARTITIONS, cap: CAP, handlerMs: HANDLER_MS, gate: false };
}

/** A schema of the figure's own, the runner opened on every node; closed and dropped after `body`. */
async function withRunner(ctx: BenchContext, nodes: readonly NodeProcess[], name: string, body: (backend: PostgresBackend) => Promise<void>): Promise<void> {
  const backend = await openPostgresBackend(ctx, `scale_${name}`);
  try {
    await all(nodes, { cmd: 'open', run: run(backend.schema, name) }, 'opened');
    try {
      await body(backend);
    } finally {
      await all(nodes, { cmd: 'close' }, 'closed');
    }
  } finally {
    await backend.close();
  }
}

// ---------------------------------------------------------------------------------------------------
// join

export async function joinFigure(ctx: BenchContext, nodes: readonly NodeProcess[]): Promise<void> {
  const staying = nodes.slice(0, 3);
  const joiner = nodes[3] as NodeProcess;
  const group = [...staying, joiner];
  await withRunner(ctx, group, 'join', async (backend) => {
    await all(staying, { cmd: 'start' }, 'starting');
    await untilSettled(staying, PARTITIONS);
    const writers = startWriters(ctx, backend.openStore(), WRITE_RATE);
    /** From its start() call to owning its whole share, per sample. */
    const shareMs: number[] = [];
    try {
      const eskit: LatencyRound = async (samples) => {
        const out: number[] = [];
        for (let i = 0; i < samples; i++) {
          const mark = joiner.mark;
          joiner.send({ cmd: 'start' });
          const first = await joiner.next('first', mark, 'the joining node to handle its first event');
          const started = Number((joiner.find('starting', mark) as Line).at);
          out.push(Number(first.at) - started);
          // Untimed: the 4 settle, then it leaves and the 3 settle again.
          await untilSettled(group, PARTITIONS);
          const share = Math.ceil(PARTITIONS / group.length);
          const owning = joiner.find('owned', mark, (line) => (line.partitions as number[]).length >= share);
          if (owning) shareMs.push(Number(owning.at) - started);
          const stopping = joiner.mark;
          joiner.send({ cmd: 'stop' });
          await joiner.next('stopped', stopping, 'the joined node to stop');
          await untilSettled(staying, PARTITIONS);
        }
        return out;
      };
      await measureLatency(ctx, {
        bench: JOIN,
        samples: ctx.pick(3, 5),
        rounds: ctx.pick(1, 3),
        warmupSamples: 1,
        eskit,
        baseline: rawHandoffBaseline(backend, 'bench-raw-join'),
        baselineLabel: RAW_LABEL,
        targetMs: 2_000,
        note: `a 4th node process starts beside 3 sharing ${PARTITIONS} partitions (writers ~${WRITE_RATE} events/s, default settings) → its handler's first event, from its start() call`,
      });
      ctx.log(
        `  ${JOIN}: the joining node owned its whole share (${Math.ceil(PARTITIONS / group.length)} partitions) after p50 ${significant(median(shareMs))} ms, ` +
          `max ${significant(Math.max(...shareMs))} ms (${shareMs.length} joins, warm-up included)`,
      );
    } finally {
      const { appended, seconds } = await writers.stop();
      ctx.log(`  ${JOIN}: the writers appended ${appended} events in ${seconds.toFixed(1)} s (${Math.round(appended / seconds)}/s)`);
    }
  });
}

/**
 * Appends one event at a time to random streams, on a schedule of `perSecond` in total (an append
 * that is late does not hold the next back: they overlap, as independent writers would).
 */
function startWriters(ctx: BenchContext, store: EventStore, perSecond: number): { stop(): Promise<{ appended: number; seconds: number }> } {
  const started = now();
  const inFlight = new Set<Promise<void>>();
  let issued = 0;
  let appended = 0;
  const timer = setInterval(() => {
    const due = Math.floor(((now() - started) / 1000) * perSecond) - issued;
    for (let i = 0; i < due; i++) {
      issued++;
      const append: Promise<void> = store.append(`w-${Math.floor(Math.random() * WRITE_STREAMS)}`, [EVENT]).then(
        () => void appended++,
        (error: unknown) => ctx.log(`  writer: append failed: ${error instanceof Error ? error.message : String(error)}`),
      );
      inFlight.add(append);
      void append.finally(() => inFlight.delete(append));
    }
  }, 5);
  return {
    async stop() {
      clearInterval(timer);
      await Promise.all(inFlight);
      return { appended, seconds: (now() - started) / 1000 };
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// leave

export async function leaveFigure(ctx: BenchContext, nodes: readonly NodeProcess[]): Promise<void> {
  await withRunner(ctx, nodes, 'leave', async (backend) => {
    await all(nodes, { cmd: 'start' }, 'starting');
    await untilSettled(nodes, PARTITIONS);
    const writer = backend.openStore();
    let sample = 0;
    const steps: LeaveSteps[] = [];
    const eskit: LatencyRound = async (samples) => {
      const out: number[] = [];
      for (let i = 0; i < samples; i++, sample++) {
        const stopper = nodes[sample % nodes.length] as NodeProcess;
        const others = nodes.filter((node) => node !== stopper);
        const acquires = others.reduce((sum, node) => sum + node.acquires, 0);
        const step = await leaveSample(writer, stopper, others, sample);
        out.push(step.handledMs);
        // Untimed: the others' lanes settle (counting their starts), then it comes back, and the 4 settle.
        await untilSettled(others, PARTITIONS);
        steps.push({ ...step, laneStarts: others.reduce((sum, node) => sum + node.acquires, 0) - acquires });
        const mark = stopper.mark;
        stopper.send({ cmd: 'start' });
        await stopper.next('starting', mark, 'the stopped node to start again');
        await untilSettled(nodes, PARTITIONS);
      }
      return out;
    };
    await measureLatency(ctx, {
      bench: LEAVE,
      samples: ctx.pick(3, 6),
      rounds: ctx.pick(2, 3),
      warmupSamples: 1,
      eskit,
      baseline: rawHandoffBaseline(backend, 'bench-raw-leave'),
      baselineLabel: RAW_LABEL,
      targetMs: 50,
      note:
        `${nodes.length} node processes, ${PARTITIONS} partitions; each partition of the stopping node has an event its handler is busy with → ` +
        "the last of them reaches another node's handler, from the stop() call",
    });
    const p50 = (step: keyof LeaveSteps): number => significant(median(steps.map((s) => s[step])));
    ctx.log(
      `  ${LEAVE}: from stop(), p50 over ${steps.length} samples (warm-up included): the stopping node released the last of its partitions ` +
        `after ${p50('releasedMs')} ms, the others held them all after ${p50('takenMs')} ms, and had all the events after ${p50('handledMs')} ms; ` +
        `to take its ${PARTITIONS / nodes.length} partitions the 3 others started ${p50('laneStarts')} partition lanes (lock acquires)`,
    );
  });
}

/** From the stop() call: the last partition released (its lease's signal), the last taken by another node, the last event handled. */
interface LeaveSteps {
  releasedMs: number;
  takenMs: number;
  handledMs: number;
  /** Lock acquire calls of the others' lanes from the stop to their settling (each a lane start). */
  laneStarts: number;
}

/** One sample: an event held in each partition of `stopper`, then its stop(); ms until the others have them all. */
async function leaveSample(writer: EventStore, stopper: NodeProcess, others: readonly NodeProcess[], sample: number): Promise<Omit<LeaveSteps, 'laneStarts'>> {
  const partitions = [...stopper.owned];
  if (partitions.length === 0) throw new Error(`node ${stopper.index} holds no partition`);
  const mark = stopper.mark;
  const otherMarks = others.map((node) => node.mark);
  const positions: number[] = [];
  for (const partition of partitions) {
    const { position } = await writer.append(streamIn(partition, `hold-${sample}`), [{ type: HOLD_TYPE, data: { holder: stopper.index } }]);
    positions.push(position);
  }
  const holding = (position: number): boolean => stopper.find('holding', mark, (line) => line.position === position) !== undefined;
  await waitUntil([stopper], () => positions.every(holding), `node ${stopper.index} to hold an event in each of its partitions`, 30_000, mark);
  const stopping = stopper.mark;
  stopper.send({ cmd: 'stop' });
  const reached = (position: number): Line | undefined => {
    for (const [i, node] of others.entries()) {
      const line = node.find('held', otherMarks[i] as number, (l) => l.position === position);
      if (line) return line;
    }
    return undefined;
  };
  await waitUntil(others, () => positions.every((position) => reached(position) !== undefined), 'the others to handle the events it gave up', 30_000, otherMarks);
  const stoppedAt = Number((await stopper.next('stopping', stopping, 'the stopping node to say when it stopped')).at);
  await stopper.next('stopped', stopping, 'the node to stop');
  const last = (times: number[]): number => Math.max(...times) - stoppedAt;
  const ownedLine = (node: NodeProcess, from: number, holds: boolean, partition: number): number =>
    Number(node.find('owned', from, (line) => (line.partitions as number[]).includes(partition) === holds)?.at ?? NaN);
  return {
    releasedMs: last(partitions.map((partition) => ownedLine(stopper, stopping, false, partition))),
    takenMs: last(partitions.map((partition) => Math.min(...others.map((node, i) => ownedLine(node, otherMarks[i] as number, true, partition)).filter((at) => !Number.isNaN(at))))),
    handledMs: last(positions.map((position) => Number((reached(position) as Line).at))),
  };
}

/** A stream id of `partition` (stream ids are the partition key). */
function streamIn(partition: number, prefix: string): string {
  for (let k = 0; ; k++) {
    const id = `${prefix}-${k}`;
    if (partitionOf(id, PARTITIONS) === partition) return id;
  }
}
