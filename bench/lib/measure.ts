import { median, significant, summariseLatencies } from './stats.js';

/** What one measured round did: units of work (events), its wall time, and each operation's duration. */
export interface RoundSample {
  units: number;
  elapsedNs: number;
  latenciesNs: number[];
}

/** Runs `ops` timed operations and reports them. */
export type Round = (ops: number) => Promise<RoundSample>;

/**
 * One operation; returns how many units (events) it processed. Synchronous drivers (better-sqlite3, the
 * array baseline) return a number directly, and are then not awaited: an `await` per call would charge
 * them a microtask the raw driver does not cost.
 */
export type Op = () => number | Promise<number>;

/** Operations one after another, each timed with `process.hrtime.bigint` (one clock read per op). */
export function sequential(op: Op): Round {
  return async (ops) => {
    const latenciesNs = new Array<number>(ops);
    let units = 0;
    const start = process.hrtime.bigint();
    let before = start;
    for (let i = 0; i < ops; i++) {
      const result = op();
      const handled = typeof result === 'number' ? result : await result;
      units += handled;
      const after = process.hrtime.bigint();
      latenciesNs[i] = Number(after - before);
      before = after;
    }
    return { units, elapsedNs: Number(before - start), latenciesNs };
  };
}

/**
 * `workers` loops running at once, sharing `ops` operations between them; `op` gets the worker's index.
 * Elapsed time runs from the start until the last worker is done.
 */
export function concurrent(workers: number, op: (worker: number) => Promise<number>): Round {
  return async (ops) => {
    const latenciesNs: number[] = [];
    let units = 0;
    const start = process.hrtime.bigint();
    const loops = Array.from({ length: workers }, async (_, worker) => {
      const share = Math.floor(ops / workers) + (worker < ops % workers ? 1 : 0);
      for (let i = 0; i < share; i++) {
        const before = process.hrtime.bigint();
        // Not `units += await ...`: that reads `units` before the await and loses the other workers' adds.
        const handled = await op(worker);
        latenciesNs.push(Number(process.hrtime.bigint() - before));
        units += handled;
      }
    });
    await Promise.all(loops);
    return { units, elapsedNs: Number(process.hrtime.bigint() - start), latenciesNs };
  };
}

export interface Comparison {
  /** Figure name, e.g. `store.append.single.postgres`. */
  bench: string;
  /** Unit of the throughput figure, e.g. `events/s`. */
  unit: string;
  /** Operations per measured round (each side). */
  ops: number;
  /** Operations per side before measuring (JIT, prepared statements, connections). Default ops / 5, at least 1. */
  warmupOps?: number;
  /** Measured rounds per side. Default 3. */
  rounds?: number;
  eskit: Round;
  baseline: Round;
  /** What the baseline does, for the table (e.g. "pg: 1-row INSERT, autocommit"). */
  baselineLabel: string;
  /** The ratio eskit should reach (from DESIGN.md section 4), shown beside the measured one. */
  target?: number;
  /** One short remark printed under the table (e.g. why a ratio below 1 is expected). */
  note?: string;
}

export interface Figure {
  bench: string;
  unit: string;
  /** eskit throughput: median over rounds of units / second. */
  value: number;
  p50Ms: number;
  p99Ms: number;
  baseline: number;
  baselineP50Ms: number;
  baselineP99Ms: number;
  /** value / baseline. */
  ratio: number;
  rounds: number;
  ops: number;
  baselineLabel: string;
  target?: number;
  note?: string;
}

/**
 * Measures eskit beside its baseline in the same run: a warm-up of each, then `rounds` rounds of each,
 * alternating which side goes first (e-b, b-e, e-b, ...) so that drift in machine load hits both alike.
 * Throughput is the median of the rounds; latency percentiles pool every measured operation.
 */
export async function compare(spec: Comparison): Promise<Figure> {
  const rounds = spec.rounds ?? 3;
  const warmupOps = spec.warmupOps ?? Math.max(1, Math.floor(spec.ops / 5));
  await spec.eskit(warmupOps);
  await spec.baseline(warmupOps);
  const eskit: RoundSample[] = [];
  const baseline: RoundSample[] = [];
  for (let round = 0; round < rounds; round++) {
    await yieldToEventLoop();
    if (round % 2 === 0) {
      eskit.push(await spec.eskit(spec.ops));
      baseline.push(await spec.baseline(spec.ops));
    } else {
      baseline.push(await spec.baseline(spec.ops));
      eskit.push(await spec.eskit(spec.ops));
    }
  }
  const e = summarise(eskit);
  const b = summarise(baseline);
  const figure: Figure = {
    bench: spec.bench,
    unit: spec.unit,
    value: e.throughput,
    p50Ms: e.p50Ms,
    p99Ms: e.p99Ms,
    baseline: b.throughput,
    baselineP50Ms: b.p50Ms,
    baselineP99Ms: b.p99Ms,
    ratio: e.throughput / b.throughput,
    rounds,
    ops: spec.ops,
    baselineLabel: spec.baselineLabel,
  };
  if (spec.target !== undefined) figure.target = spec.target;
  if (spec.note !== undefined) figure.note = spec.note;
  return figure;
}

/**
 * A synchronous driver (better-sqlite3) behind an async API runs whole rounds on microtasks alone, and
 * the event loop, which delivers Ctrl-C, never gets a turn. Yielding between rounds keeps the run
 * interruptible without touching what is timed.
 */
function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function summarise(samples: RoundSample[]): { throughput: number; p50Ms: number; p99Ms: number } {
  const throughput = median(samples.map((s) => s.units / (s.elapsedNs / 1e9)));
  const { p50Ms, p99Ms } = summariseLatencies(samples.flatMap((s) => s.latenciesNs));
  return { throughput, p50Ms, p99Ms };
}

/** The figure as its one JSON line: the fixed leading fields, then the extras. */
export function figureJson(figure: Figure): string {
  const line: Record<string, unknown> = {
    bench: figure.bench,
    value: Math.round(figure.value),
    unit: figure.unit,
    p50_ms: significant(figure.p50Ms),
    p99_ms: significant(figure.p99Ms),
    baseline: Math.round(figure.baseline),
    // Three digits, so that a ratio just under its target does not print as the target itself.
    ratio: significant(figure.ratio, 3),
    baseline_p50_ms: significant(figure.baselineP50Ms),
    baseline_p99_ms: significant(figure.baselineP99Ms),
    rounds: figure.rounds,
    ops: figure.ops,
  };
  if (figure.target !== undefined) line.target = figure.target;
  return JSON.stringify(line);
}
