// The `store` group's concurrent-writer figures, run by bench/store.ts after an adapter's common
// figures, on that adapter's store and schema or file. 1 event per append, a new stream per append.
//
// - store.append.concurrent8.postgres: 8 writer loops in this process through one PostgresEventStore
//   (pool of 8; group commit: appends that queue while a group is written go together as the next
//   group, one append_group call) beside 8 raw 1-row INSERT writers on a pool of 8.
// - store.append.concurrent8.sqlite: 8 writer loops through one SqliteEventStore beside eskit's own
//   single writer (better-sqlite3 is synchronous: there is no raw concurrency to compare with).
// - store.append.concurrent32.processes4.postgres: 4 child processes (fixtures/append-writers.ts) x 8
//   writer loops, each process a PostgresEventStore on its own pool of 8, all on one schema (so the
//   processes take turns on the schema's append lock), beside the same raw writers as 4 processes x 8.
//   Each round spawns its processes; they connect and warm up, then all get "go" at once. Throughput is
//   the events of all processes over the wall time from "go" to the last process done (the processes
//   report their end time on CLOCK_MONOTONIC); p50/p99 pool every process's per-append latencies.
// - store.append.concurrent8.processes8.postgres: the same with 8 processes x 1 writer, the shape group
//   commit cannot help (no process ever has two appends to group); no target, it shows the limit.
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import type { EventStore } from '../src/core/store.js';
import type { WriterDone, WriterOptions } from './fixtures/append-writers.js';
import type { BenchContext } from './lib/context.js';
import { concurrent, sequential } from './lib/measure.js';
import type { Round } from './lib/measure.js';
import { EVENT } from './lib/store-workload.js';
import { BenchChild } from './lib/child.js';

/** Writer loops per process (and the size of each pool). */
export const WRITERS = 8;
const PROCESSES = 4;

const PG = `store.append.concurrent${WRITERS}.postgres`;
const SQLITE = `store.append.concurrent${WRITERS}.sqlite`;
const PG_PROCESSES = `store.append.concurrent${WRITERS * PROCESSES}.processes${PROCESSES}.postgres`;
/** The shape group commit cannot help: many processes, each with one append at a time. */
const LONE_PROCESSES = 8;
const PG_LONE_WRITERS = `store.append.concurrent${LONE_PROCESSES}.processes${LONE_PROCESSES}.postgres`;

const WRITER = fileURLToPath(new URL('./fixtures/append-writers.ts', import.meta.url));

/** The figures of this file for an adapter (so that store.ts can skip an adapter that `--filter` leaves nothing of). */
export function concurrentFigures(adapter: string): string[] {
  if (adapter === 'postgres') return [PG, PG_PROCESSES, PG_LONE_WRITERS];
  if (adapter === 'sqlite') return [SQLITE];
  return [];
}

export async function concurrentSqlite(ctx: BenchContext, store: EventStore): Promise<void> {
  let streams = 0;
  const appendOne = async (): Promise<number> => (await store.append(`conc-${streams++}`, [EVENT])).events.length;
  await ctx.measure({
    bench: SQLITE,
    unit: 'events/s',
    ops: ctx.pick(2000, 5000),
    rounds: ctx.pick(3, 7),
    eskit: concurrent(WRITERS, appendOne),
    baseline: sequential(appendOne),
    baselineLabel: 'eskit itself: SqliteEventStore, 1 writer (sequential appends)',
    target: 2,
    note:
      `${WRITERS} writers vs 1 on the same store, 1 event per call; the baseline is eskit, not a raw driver: ` +
      'the ratio is what writing the appends of one event-loop turn in one transaction gains',
  });
}

export interface PostgresSide {
  /** The store, on a pool of WRITERS connections. */
  store: EventStore;
  /** The raw side's pool (WRITERS connections), also used to look at the eskit table afterwards. */
  pool: pg.Pool;
  schema: string;
  connectionString: string;
  /** The raw baseline: one event to a new stream `streamId`, a 1-row INSERT into `<schema>.raw_events`. */
  appendOne(streamId: string): Promise<number>;
}

export async function concurrentPostgres(ctx: BenchContext, side: PostgresSide): Promise<void> {
  try {
    await concurrent8Postgres(ctx, side);
  } catch (error) {
    ctx.fail(PG, error);
  }
  for (const figure of PROCESS_FIGURES) {
    try {
      await processesPostgres(ctx, side, figure);
    } catch (error) {
      ctx.fail(figure.bench, error);
    }
  }
}

async function concurrent8Postgres(ctx: BenchContext, side: PostgresSide): Promise<void> {
  const { store, pool, schema } = side;
  let eskitStreams = 0;
  let rawStreams = 0;
  const figure = await ctx.measure({
    bench: PG,
    unit: 'events/s',
    ops: ctx.pick(800, 2000),
    rounds: ctx.pick(3, 7),
    eskit: concurrent(WRITERS, async () => (await store.append(`conc-${eskitStreams++}`, [EVENT])).events.length),
    baseline: concurrent(WRITERS, () => side.appendOne(`conc-${rawStreams++}`)),
    baselineLabel: `pg: 1-row INSERT from ${WRITERS} connections, bigserial`,
    target: 1.0,
    note:
      `${WRITERS} writers, 1 event per call. eskit group-commits: appends that queue while a group is written go ` +
      'as the next group (one append_group call, one transaction, one lock turn); the baseline runs each INSERT ' +
      `as a transaction of its own on one of ${WRITERS} connections, positions from a sequence, committing in any order`,
  });
  if (figure) ctx.log(`${PG}: eskit groups (all rounds and warm-up): ${await groupSizes(pool, schema, 'conc-%')}`);
}

interface ProcessesFigure {
  bench: string;
  processes: number;
  writers: number;
  /** Stream prefix of the figure's appends (also how its groups are counted afterwards). */
  name: string;
  ops: [number, number];
  target?: number;
  note: string;
}

const PROCESS_FIGURES: readonly ProcessesFigure[] = [
  {
    bench: PG_PROCESSES,
    processes: PROCESSES,
    writers: WRITERS,
    name: 'procs',
    ops: [3200, 8000],
    target: 0.8,
    note:
      `${PROCESSES} processes x ${WRITERS} writers, 1 event per call, each process its own pool of ${WRITERS}; eskit's ` +
      'processes take turns on the schema append lock, a group each turn; the raw INSERTs commit in any order',
  },
  {
    bench: PG_LONE_WRITERS,
    processes: LONE_PROCESSES,
    writers: 1,
    name: 'lone',
    ops: [1600, 4000],
    note:
      `${LONE_PROCESSES} processes x 1 writer, 1 event per call: no process ever has two appends to group, so eskit ` +
      'commits one append per turn of the schema lock, flush included; the raw INSERTs share flushes (no target: the limit of the design)',
  },
];

async function processesPostgres(ctx: BenchContext, side: PostgresSide, figure: ProcessesFigure): Promise<void> {
  if (!ctx.selected(figure.bench)) return;
  const { pool, schema } = side;
  const round = (mode: WriterOptions['mode']): Round => processesRound(ctx, figure, { mode, connectionString: side.connectionString, schema });
  const measured = await ctx.measure({
    bench: figure.bench,
    unit: 'events/s',
    ops: ctx.pick(...figure.ops),
    // Each process warms up on its own before "go"; compare()'s warm-up round (0 ops) spawns nothing.
    warmupOps: 0,
    rounds: ctx.pick(3, 7),
    eskit: round('eskit'),
    baseline: round('raw'),
    baselineLabel: `pg: 1-row INSERT, ${figure.processes} processes x ${figure.writers} connection${figure.writers === 1 ? '' : 's'}`,
    ...(figure.target === undefined ? {} : { target: figure.target }),
    note: figure.note,
  });
  if (measured) ctx.log(`${figure.bench}: eskit groups (measured rounds): ${await groupSizes(pool, schema, `${figure.name}-eskit-%`, '%-warm-%')}`);
}

/**
 * How the appends of the streams matching `like` were grouped: the events of one transaction share its
 * xmin (append_group writes a group in one statement, without subtransactions).
 */
async function groupSizes(pool: pg.Pool, schema: string, like: string, notLike = ''): Promise<string> {
  const { rows } = await pool.query<{ size: number; groups: number }>(
    `SELECT size, count(*)::int AS groups
       FROM (SELECT count(*)::int AS size FROM "${schema}".events WHERE stream_id LIKE $1 AND stream_id NOT LIKE $2 GROUP BY xmin::text) t
      GROUP BY size ORDER BY size`,
    [like, notLike],
  );
  let groups = 0;
  let events = 0;
  for (const row of rows) {
    groups += row.groups;
    events += row.size * row.groups;
  }
  const alone = rows.find((row) => row.size === 1)?.groups ?? 0;
  const sizes = rows.map((row) => `${row.size}:${row.groups}`).join(' ');
  return (
    `${events} events in ${groups} transactions, mean ${(events / groups).toFixed(2)} per group, ` +
    `${((100 * alone) / events).toFixed(1)} % of events alone; size:count ${sizes}`
  );
}

// ---------------------------------------------------------------------------------------------------
// Writer processes

/** One round of a processes figure: `shape.processes` fresh writer processes share `ops` appends. */
function processesRound(
  ctx: BenchContext,
  shape: { processes: number; writers: number; name: string },
  options: Pick<WriterOptions, 'mode' | 'connectionString' | 'schema'>,
): Round {
  let round = 0;
  return async (ops) => {
    if (ops === 0) return { units: 0, elapsedNs: 0, latenciesNs: [] };
    const index = round++;
    const prefix = `${shape.name}-${options.mode}-${index}`;
    const children = Array.from(
      { length: shape.processes },
      (_, i) =>
        new BenchChild(ctx, `${options.mode} writer process ${i}`, WRITER, {
          ...options,
          writers: shape.writers,
          ops: Math.floor(ops / shape.processes) + (i < ops % shape.processes ? 1 : 0),
          warmupOps: shape.writers * 16,
          prefix: `${prefix}-${i}`,
        }),
    );
    let graceMs = 0;
    try {
      await Promise.all(children.map((child) => child.next('ready', 0, 60_000)));
      const go = process.hrtime.bigint();
      for (const child of children) child.send('go');
      const done = (await Promise.all(children.map((child) => child.next('done', 0, 300_000)))) as unknown as WriterDone[];
      graceMs = 10_000;
      let units = 0;
      let end = go;
      let lastStart = go;
      for (const result of done) {
        units += result.units;
        if (BigInt(result.endNs) > end) end = BigInt(result.endNs);
        if (BigInt(result.startNs) > lastStart) lastStart = BigInt(result.startNs);
      }
      if (units !== ops) throw new Error(`the ${options.mode} writer processes appended ${units} events, expected ${ops}`);
      ctx.log(
        `  ${options.mode} processes, round ${index}: ${units} events in ${(Number(end - go) / 1e6).toFixed(0)} ms ` +
          `(the last process started ${(Number(lastStart - go) / 1e6).toFixed(2)} ms after "go")`,
      );
      return { units, elapsedNs: Number(end - go), latenciesNs: done.flatMap((result) => result.latenciesNs) };
    } finally {
      // After "done" a process closes its pool and exits; a failed round's processes are killed.
      await Promise.all(children.map((child) => child.end(graceMs)));
    }
  };
}

