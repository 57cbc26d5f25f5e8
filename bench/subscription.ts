// The `subscription` group: a Subscription catching up a backlog beside the store's own readAll over
// the same events, and append → live handler beside a raw NOTIFY → LISTEN round trip.
//
// Also the parts the `automation` and `leadership` groups share: the backends (a SQLite file, a
// PostgreSQL schema per group), seeding, a catch-up run, and latency figures (a figure in ms, lower is
// better, which `ctx.measure` cannot express: it measures throughputs).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import type { CheckpointStore } from '../src/core/checkpoint.js';
import type { NewEvent } from '../src/core/event.js';
import type { Logger } from '../src/core/logger.js';
import type { EventStore } from '../src/core/store.js';
import type { Backend as EskitBackend } from '../src/core/backend.js';
import { PostgresCheckpointStore, postgres } from '../src/postgres/index.js';
import type { PostgresBackend as EskitPostgres, PostgresEventStore } from '../src/postgres/index.js';
import { sqlite } from '../src/sqlite/index.js';
import type { SqliteBackend as EskitSqlite, SqliteEventStore } from '../src/sqlite/index.js';
import { Subscription } from '../src/subscription/index.js';
import { BenchRun } from './lib/context.js';
import type { BenchContext, BenchGroup } from './lib/context.js';
import { sequential } from './lib/measure.js';
import type { Figure } from './lib/measure.js';
import { percentileSorted, significant } from './lib/stats.js';

// The same event as the store group's: a realistic small payload.
const DATA = { cartId: 'cart-7f3a', sku: 'sku-12345', quantity: 2, unitPrice: 1999, currency: 'EUR', note: 'gift wrap, leave at the door' };
const METADATA = { correlationId: '0190b3b4-8a3e-7d7e-9e4b-6f1f2b3c4d5e', causationId: '0190b3b4-8a3e-7d7e-9e4b-6f1f2b3c4d5f' };
export const EVENT: NewEvent = { type: 'ItemAdded', data: DATA, metadata: METADATA };
/** Events per seeded stream (and per append call while seeding). */
export const STREAM_LENGTH = 100;

export type Adapter = 'sqlite' | 'postgres';

// ---------------------------------------------------------------------------------------------------
// Latency figures

/** One side of a latency figure: takes `samples` samples, one after another, each in milliseconds. */
export type LatencyRound = (samples: number) => Promise<number[]>;

export interface LatencyComparison {
  /** Figure name, e.g. `subscription.live.postgres`. */
  bench: string;
  /** Samples per round, each side. */
  samples: number;
  /** Rounds per side, alternating which side goes first, as `ctx.measure` does. Default 3. */
  rounds?: number;
  /** Samples per side thrown away first (connections, JIT, prepared statements). Default 1. */
  warmupSamples?: number;
  eskit: LatencyRound;
  baseline: LatencyRound;
  baselineLabel: string;
  /** The p50 eskit should stay at or under, in ms (DESIGN.md section 4). */
  targetMs?: number;
  note?: string;
  /** More fields for the JSON line (after the fixed ones), read once the rounds are done. */
  extra?: () => Record<string, unknown>;
}

/**
 * Measures a latency (lower is better) beside its baseline: warm-up, then alternating rounds; p50/p99
 * pool every sample of a side. The figure's `value` and `baseline` are p50s in ms, `ratio` is
 * value / baseline (here: how many times the raw latency). Printed as the store group prints its
 * figures, with `target_ms` instead of `target` (which is a throughput ratio there), and added to the
 * run's table with the verdict in its note.
 */
export async function measureLatency(ctx: BenchContext, spec: LatencyComparison): Promise<Figure | undefined> {
  if (!ctx.selected(spec.bench)) return undefined;
  const rounds = spec.rounds ?? 3;
  const warmup = spec.warmupSamples ?? 1;
  if (warmup > 0) {
    await spec.eskit(warmup);
    await spec.baseline(warmup);
  }
  const eskit: number[] = [];
  const baseline: number[] = [];
  for (let round = 0; round < rounds; round++) {
    if (round % 2 === 0) {
      eskit.push(...(await spec.eskit(spec.samples)));
      baseline.push(...(await spec.baseline(spec.samples)));
    } else {
      baseline.push(...(await spec.baseline(spec.samples)));
      eskit.push(...(await spec.eskit(spec.samples)));
    }
  }
  const e = percentiles(eskit);
  const b = percentiles(baseline);
  let note = spec.note;
  if (spec.targetMs !== undefined) {
    const verdict = `p50 ${significant(e.p50, 3)} ms, target <= ${spec.targetMs} ms: ${e.p50 <= spec.targetMs ? 'ok' : 'MISSED'}`;
    note = note === undefined ? verdict : `${verdict}; ${note}`;
  }
  const figure: Figure = {
    bench: spec.bench,
    unit: 'ms',
    value: e.p50,
    p50Ms: e.p50,
    p99Ms: e.p99,
    baseline: b.p50,
    baselineP50Ms: b.p50,
    baselineP99Ms: b.p99,
    ratio: e.p50 / b.p50,
    rounds,
    ops: spec.samples,
    baselineLabel: spec.baselineLabel,
  };
  if (note !== undefined) figure.note = note;
  // The table lives in the run; a context that is not the run only gets the JSON line.
  if (ctx instanceof BenchRun) ctx.figures.push(figure);
  const line: Record<string, unknown> = {
    bench: figure.bench,
    value: significant(figure.value),
    unit: 'ms',
    p50_ms: significant(figure.p50Ms),
    p99_ms: significant(figure.p99Ms),
    baseline: significant(figure.baseline),
    ratio: significant(figure.ratio, 3),
    baseline_p50_ms: significant(figure.baselineP50Ms),
    baseline_p99_ms: significant(figure.baselineP99Ms),
    rounds,
    ops: spec.samples,
  };
  if (spec.targetMs !== undefined) line.target_ms = spec.targetMs;
  if (spec.extra !== undefined) Object.assign(line, spec.extra());
  process.stdout.write(`${JSON.stringify(line)}\n`);
  ctx.log(
    `${figure.bench}: p50 ${significant(e.p50, 3)} ms (p99 ${significant(e.p99, 3)}) vs ${significant(b.p50, 3)} ms (p99 ${significant(b.p99, 3)}), ` +
      `ratio ${figure.ratio.toFixed(3)}${spec.targetMs === undefined ? '' : `, target <= ${spec.targetMs} ms`}`,
  );
  return figure;
}

function percentiles(samplesMs: readonly number[]): { p50: number; p99: number } {
  const sorted = Float64Array.from(samplesMs).sort();
  return { p50: percentileSorted(sorted, 50), p99: percentileSorted(sorted, 99) };
}

/** `promise`, or a rejection naming `what` after `ms`: a stuck benchmark fails instead of hanging. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `condition` every `everyMs` until it holds (for setup between timed samples, never inside one). */
export async function until(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 30_000, everyMs = 1): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await condition())) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/** eskit's own logs during a benchmark: errors are reported, the expected warnings (standby, ...) dropped. */
export function benchLogger(ctx: BenchContext): Logger {
  return {
    debug() {},
    info() {},
    warn() {},
    error(fields, message) {
      const err = fields.err instanceof Error ? `: ${fields.err.message}` : '';
      ctx.log(`eskit error: ${message}${err}`);
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// Backends

export interface Backend {
  adapter: Adapter;
  /** eskit's one-call backend (no leader election: one node). */
  eskit: EskitBackend;
  store: EventStore;
  checkpoints: CheckpointStore;
  /** Closes everything and removes the file or schema (also on Ctrl-C). */
  close(): Promise<void>;
}

export interface SqliteBackend extends Backend {
  adapter: 'sqlite';
  eskit: EskitSqlite;
  store: SqliteEventStore;
}

export interface PostgresBackend extends Backend {
  adapter: 'postgres';
  eskit: EskitPostgres;
  store: PostgresEventStore;
  schema: string;
  /** For raw clients, lock registries and child processes. */
  connectionString: string;
  /** The store's pool. */
  pool: pg.Pool;
  /** Another node's store: its own pool (and LISTEN connection) on the same schema, closed with the backend. */
  openStore(): PostgresEventStore;
  /** Another node: a `postgres()` backend (no leader election) on a pool of its own, closed with the backend. */
  openNode(): EskitPostgres;
  /** A raw client on a connection of its own, ended with the backend. */
  client(): Promise<pg.Client>;
}

export async function openSqliteBackend(ctx: BenchContext): Promise<SqliteBackend> {
  const dir = mkdtempSync(join(tmpdir(), 'eskit-bench-'));
  let eskit: EskitSqlite | undefined;
  const close = ctx.defer(async () => {
    await eskit?.close();
    rmSync(dir, { recursive: true, force: true });
  });
  try {
    eskit = sqlite({ path: join(dir, 'eskit.db') });
  } catch (error) {
    await close();
    throw error;
  }
  return { adapter: 'sqlite', eskit, store: eskit.store, checkpoints: eskit.checkpoints, close };
}

/** A schema of its own per group (`bench_<pid>_<group>`), migrated. */
export async function openPostgresBackend(ctx: BenchContext, group: string): Promise<PostgresBackend> {
  const schema = `bench_${process.pid}_${group}`;
  const connectionString = ctx.postgresUrl;
  const pools: pg.Pool[] = [];
  const backends: EskitPostgres[] = [];
  const clients: pg.Client[] = [];
  const logger = benchLogger(ctx);
  const newPool = (): pg.Pool => {
    const pool = new pg.Pool({ connectionString, max: 4, connectionTimeoutMillis: 5000 });
    pool.on('error', () => undefined);
    pools.push(pool);
    return pool;
  };
  const pool = newPool();
  const close = ctx.defer(async () => {
    await Promise.all(clients.map((client) => client.end().catch(() => undefined)));
    await Promise.all(backends.map((backend) => backend.close().catch(() => undefined)));
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch((error: unknown) => {
      ctx.log(`could not drop schema ${schema}: ${error instanceof Error ? error.message : String(error)}`);
    });
    await Promise.all(pools.map((p) => p.end().catch(() => undefined)));
  });
  const open = (on: pg.Pool): EskitPostgres => {
    const backend = postgres({ pool: on, schema, logger, leaderElection: false });
    backends.push(backend);
    return backend;
  };
  const openStore = (): PostgresEventStore => open(newPool()).store;
  const eskit = open(pool);
  const { store } = eskit;
  try {
    await pool.query('SELECT 1');
  } catch (cause) {
    await close();
    throw new Error(
      `PostgreSQL is not reachable at ${connectionString} (${cause instanceof Error ? cause.message : String(cause)}). ` +
        'Start it, or point ESKIT_BENCH_PG_URL at one.',
      { cause },
    );
  }
  try {
    await store.migrate();
  } catch (error) {
    await close();
    throw error;
  }
  return {
    adapter: 'postgres',
    eskit,
    store,
    checkpoints: eskit.checkpoints,
    schema,
    connectionString,
    pool,
    openStore,
    openNode: () => open(newPool()),
    async client() {
      const client = new pg.Client({ connectionString });
      client.on('error', () => undefined);
      clients.push(client);
      await client.connect();
      return client;
    },
    close,
  };
}

/** Appends `count` events, STREAM_LENGTH per stream and per call; returns the head position. */
export async function seed(backend: Backend, count: number): Promise<number> {
  const batch = Array.from({ length: STREAM_LENGTH }, () => EVENT);
  for (let written = 0, stream = 0; written < count; written += STREAM_LENGTH, stream++) {
    await backend.store.append(`seed-${stream}`, batch.slice(0, Math.min(STREAM_LENGTH, count - written)));
  }
  if (backend.adapter === 'postgres') await (backend as PostgresBackend).pool.query(`VACUUM ANALYZE "${(backend as PostgresBackend).schema}".events`);
  return backend.store.headPosition();
}

// ---------------------------------------------------------------------------------------------------
// Catch-up

/**
 * One catch-up per call: a new Subscription (a fresh name, so no checkpoint) with default settings and a
 * no-op handler, from start() until it has handled every one of the `head` events and stop() has saved
 * its checkpoint. Returns the events handled.
 */
export function catchUpOp(ctx: BenchContext, backend: Backend, head: number, prefix: string): () => Promise<number> {
  let runs = 0;
  const logger = benchLogger(ctx);
  return async () => {
    let handled = 0;
    let caughtUp!: () => void;
    const done = new Promise<void>((resolve) => (caughtUp = resolve));
    const subscription = new Subscription({
      name: `${prefix}-${runs++}`,
      store: backend.store,
      checkpoints: backend.checkpoints,
      logger,
      handler: () => {
        if (++handled === head) caughtUp();
      },
    });
    await subscription.start();
    const failed = subscription.whenStopped().then((status) => {
      if (status.state === 'failed') throw status.error ?? new Error(`subscription ${subscription.name} failed`);
    });
    await within(Promise.race([done, failed]), 300_000, `${subscription.name} to catch up ${head} events`);
    await subscription.stop();
    await failed;
    const status = await subscription.status();
    // Short of the head (or past it) would make the figure wrong, not merely slow.
    if (handled !== head || status.position !== head) {
      throw new Error(`${subscription.name} handled ${handled} events and checkpointed ${String(status.position)}, expected ${head}`);
    }
    return handled;
  };
}

/** The baseline of a catch-up: the store's own readAll over every event (default page size). */
export function readAllOp(store: EventStore, head: number): () => Promise<number> {
  return async () => {
    let n = 0;
    for await (const _event of store.readAll()) n++;
    if (n !== head) throw new Error(`readAll read ${n} events, expected ${head}`);
    return n;
  };
}

// ---------------------------------------------------------------------------------------------------
// The group

export const subscriptionBench: BenchGroup = async (ctx) => {
  for (const adapter of ['sqlite', 'postgres'] as const) {
    if (!ctx.selected(`subscription.catchup.${adapter}`)) continue;
    let backend: Backend | undefined;
    try {
      backend = adapter === 'sqlite' ? await openSqliteBackend(ctx) : await openPostgresBackend(ctx, 'sub');
      await catchUpFigure(ctx, backend);
    } catch (error) {
      ctx.fail(`subscription.catchup.${adapter}`, error);
    } finally {
      await backend?.close();
    }
  }
  if (ctx.selected('subscription.live.postgres')) {
    let backend: PostgresBackend | undefined;
    try {
      backend = await openPostgresBackend(ctx, 'sub');
      await liveFigure(ctx, backend);
    } catch (error) {
      ctx.fail('subscription.live.postgres', error);
    } finally {
      await backend?.close();
    }
  }
};

async function catchUpFigure(ctx: BenchContext, backend: Backend): Promise<void> {
  const total = ctx.pick(20_000, 100_000);
  ctx.log(`${backend.adapter}: seeding ${total} events`);
  const head = await seed(backend, total);
  await ctx.measure({
    bench: `subscription.catchup.${backend.adapter}`,
    unit: 'events/s',
    ops: 1,
    warmupOps: 1,
    // One op is a whole catch-up (~0.1-1 s): more rounds than the default, for a steadier median.
    rounds: ctx.pick(5, 7),
    eskit: sequential(catchUpOp(ctx, backend, head, 'catchup')),
    baseline: sequential(readAllOp(backend.store, head)),
    baselineLabel: `${backend.adapter}: store.readAll() over the same events`,
    target: 0.7,
    note:
      `op = one catch-up of ${head} events from 0 (a new subscription, default settings: batches of 500, a checkpoint save every 250 ms), ` +
      'timed from start() to stop() resolved; baseline reads them in pages of 500',
  });
}

/**
 * append → live handler: a subscriber idling at the head (its checkpoint saved, then 2 ms for it to
 * settle into its wait), another store on another pool appends one event; the time runs from the
 * append call to the handler's call. Baseline: a NOTIFY from one raw connection to a raw LISTEN on
 * another, from the query call to the notification.
 */
async function liveFigure(ctx: BenchContext, backend: PostgresBackend): Promise<void> {
  const writer = backend.openStore();
  const reader = backend.openStore();
  const checkpoints = new PostgresCheckpointStore({ store: reader });
  let saved = 0;
  const watched: CheckpointStore = {
    load: (name) => checkpoints.load(name),
    claim: (name, token) => checkpoints.claim(name, token),
    list: () => checkpoints.list(),
    async save(name, position, options) {
      await checkpoints.save(name, position, options);
      saved = position;
    },
  };
  // The last event the handler saw, and when; one append is in flight at a time.
  let last = { position: 0, at: 0 };
  let wake: (() => void) | undefined;
  const reached = async (position: number): Promise<number> => {
    while (last.position < position) await new Promise<void>((resolve) => (wake = resolve));
    if (last.position !== position) throw new Error(`the handler saw event ${last.position}, expected ${position}`);
    return last.at;
  };
  const subscription = new Subscription({
    name: 'live',
    store: reader,
    checkpoints: watched,
    startFrom: 'end',
    logger: benchLogger(ctx),
    handler: (event) => {
      last = { position: event.position, at: performance.now() };
      wake?.();
    },
  });
  const stop = ctx.defer(() => subscription.stop());
  try {
    await subscription.start();
    await until(() => reader.listening, 'the LISTEN connection of the subscriber', 10_000);
    await until(async () => (await subscription.status()).state === 'leading', 'the subscription to run', 10_000);
    let appended = 0;
    let head = 0;
    const eskit: LatencyRound = async (samples) => {
      const out: number[] = [];
      for (let i = 0; i < samples; i++) {
        if (head > 0) await until(() => saved >= head, 'the subscriber to checkpoint the last event', 10_000);
        await new Promise((resolve) => setTimeout(resolve, 2));
        const start = performance.now();
        // The notification can beat the append's own reply: `reached` then finds it already handled.
        head = (await writer.append(`live-${appended++}`, [EVENT])).position;
        out.push((await within(reached(head), 10_000, `event ${head} to reach the handler`)) - start);
      }
      return out;
    };
    const baseline = await notifyRoundTrip(backend);
    await measureLatency(ctx, {
      bench: 'subscription.live.postgres',
      samples: ctx.pick(100, 300),
      rounds: ctx.pick(3, 5),
      warmupSamples: 5,
      eskit,
      baseline,
      baselineLabel: 'pg: NOTIFY → LISTEN on two raw connections',
      targetMs: 5,
      note: 'from the append call (another store and pool) to the subscriber handler, the subscriber idle at the head; includes the append round trip',
    });
  } finally {
    await stop();
  }
}

/**
 * The raw floor of any cross-connection wake-up: a NOTIFY from one raw connection to a raw LISTEN on
 * another, from the query call to the notification (2 ms apart, like the eskit side's samples).
 */
export async function notifyRoundTrip(backend: PostgresBackend): Promise<LatencyRound> {
  const listener = await backend.client();
  const notifier = await backend.client();
  const channel = `bench_notify_${process.pid}`;
  let pending: ((at: number) => void) | undefined;
  listener.on('notification', (message) => {
    const at = performance.now();
    if (message.channel === channel) pending?.(at);
  });
  await listener.query(`LISTEN ${channel}`);
  return async (samples) => {
    const out: number[] = [];
    for (let i = 0; i < samples; i++) {
      await new Promise((resolve) => setTimeout(resolve, 2));
      const received = new Promise<number>((resolve) => (pending = resolve));
      const start = performance.now();
      await notifier.query({ name: 'bench_notify', text: 'SELECT pg_notify($1, $2)', values: [channel, String(i)] });
      out.push((await within(received, 10_000, 'the notification')) - start);
      pending = undefined;
    }
    return out;
  };
}
