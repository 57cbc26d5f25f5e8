// The `view` group: a state view with one upsert per event catching up a backlog, beside a plain
// Subscription catching up the same events on the same backend in the same run plus the same writes
// done raw with the driver (a view is a subscription whose batches commit its writes together with
// its checkpoint, so the ratio is what eskit adds to a hand-written projection); a rebuild into shadow
// tables beside the catch-up alone; and read-your-writes (append → `waitFor` resolving) beside a raw
// NOTIFY → LISTEN round trip.
import { fileURLToPath } from 'node:url';
import type { EventShape, Recorded } from '../src/core/event.js';
import type { Logger } from '../src/core/logger.js';
import { PostgresViews } from '../src/postgres/index.js';
import type { PostgresEventStore } from '../src/postgres/index.js';
import { SqliteViews } from '../src/sqlite/index.js';
import { SqlView } from '../src/view/index.js';
import type { BenchContext, BenchGroup } from './lib/context.js';
import type { ChangeListenerOptions } from './fixtures/change-listener.js';
import type { PacedWritersOptions, PacedWritersPaused } from './fixtures/paced-writers.js';
import { BenchChild } from './lib/child.js';
import type { Line } from './lib/child.js';
import { BenchRun } from './lib/context.js';
import { compare, figureJson, sequential } from './lib/measure.js';
import type { Figure, Round } from './lib/measure.js';
import { median, percentileSorted, significant } from './lib/stats.js';
import { benchLogger, catchUpOp, EVENT, measureLatency, notifyRoundTrip, openPostgresBackend, openSqliteBackend, seed, STREAM_LENGTH, within } from './subscription.js';
import type { Backend, LatencyRound, PostgresBackend, SqliteBackend } from './subscription.js';

/**
 * The view every figure uses: one row per cart (stream), one upsert per event. Table names are global
 * to a database, so each view gets its own (`carts_<view name>`).
 */
const tableOf = (view: string): string => `carts_${view}`;
const setupOf = (view: string) => ({
  version: 1,
  statements: (t: (name: string) => string) => [`CREATE TABLE ${t(tableOf(view))} (cart text PRIMARY KEY, events bigint NOT NULL, quantity bigint NOT NULL)`],
});
const upsert = (table: string, placeholder: (n: number) => string): string =>
  `INSERT INTO ${table} (cart, events, quantity) VALUES (${placeholder(1)}, 1, ${placeholder(2)})
   ON CONFLICT (cart) DO UPDATE SET events = ${table}.events + 1, quantity = ${table}.quantity + excluded.quantity`;
const quantityOf = (event: Recorded<EventShape>): number => (event.data as { quantity: number }).quantity;

type Evolve = 'upsert' | 'awaited' | 'evolveBatch';

// The views run on the bench's own store (composed, not a one-call backend) with no leader election,
// as the baseline Subscription does.
function sqliteView(ctx: BenchContext, backend: SqliteBackend, name: string): SqlView {
  const { store } = backend;
  return new SqlView({
    name,
    backend: { store, views: new SqliteViews({ store }) },
    setup: setupOf(name),
    logger: benchLogger(ctx),
    evolve: (event, { prepare, table }) => {
      prepare(upsert(table(tableOf(name)), () => '?')).run(event.streamId, quantityOf(event));
    },
  });
}

function postgresView(ctx: BenchContext, backend: { store: PostgresEventStore }, name: string, mode: Evolve): SqlView {
  const { store } = backend;
  const common = { name, backend: { store, views: new PostgresViews({ store }) }, setup: setupOf(name), logger: benchLogger(ctx) };
  if (mode === 'upsert') {
    // Queued by the view and written per batch: one statement for the batch's rows.
    return new SqlView({
      ...common,
      evolve: (event, { upsert }) => {
        upsert(tableOf(name), { cart: event.streamId, events: 1, quantity: quantityOf(event) }, { key: ['cart'], increment: ['events', 'quantity'] });
      },
    });
  }
  if (mode === 'awaited') {
    return new SqlView({
      ...common,
      evolve: async (event, { client, table }) => {
        await client.query({ text: upsert(table(tableOf(name)), (n) => `$${n}`), values: [event.streamId, quantityOf(event)] });
      },
    });
  }
  // The same view, one multi-row upsert per batch: rows of one cart are summed first, because one
  // INSERT ... ON CONFLICT may not touch a row twice.
  return new SqlView({
    ...common,
    evolveBatch: async (events, { client, table }) => {
      const t = table(tableOf(name));
      await client.query({
        text: `INSERT INTO ${t} (cart, events, quantity)
               SELECT cart, count(*), sum(quantity) FROM unnest($1::text[], $2::bigint[]) AS e(cart, quantity) GROUP BY cart
               ON CONFLICT (cart) DO UPDATE SET events = ${t}.events + excluded.events, quantity = ${t}.quantity + excluded.quantity`,
        values: [events.map((event) => event.streamId), events.map(quantityOf)],
      });
    },
  });
}

export const viewBench: BenchGroup = async (ctx) => {
  const figures = [
    'view.update.sqlite',
    'view.update.postgres',
    'view.update.postgres.awaited',
    'view.update.postgres.batched',
    'view.rebuild.postgres',
    'view.readYourWrites.postgres',
    UNDER_LOAD,
    CHANGE_FEED,
  ];
  if (ctx.selected('view.update.sqlite')) {
    let backend: SqliteBackend | undefined;
    try {
      backend = await openSqliteBackend(ctx);
      const sqlite = backend;
      const head = await seedFor(ctx, backend);
      await updateFigure(ctx, backend, head, 'view.update.sqlite', (name) => sqliteView(ctx, sqlite, name), { how: 'evolve: one prepared upsert per event' });
    } catch (error) {
      ctx.fail('view.update.sqlite', error);
    } finally {
      await backend?.close();
    }
  }
  if (!figures.slice(1).some((bench) => ctx.selected(bench))) return;
  let backend: PostgresBackend | undefined;
  try {
    backend = await openPostgresBackend(ctx, 'view');
    const postgres = backend;
    // The under-load and change-feed figures need no backlog: seeded only for the others (as before when they run).
    const head = figures.slice(1, -2).some((bench) => ctx.selected(bench)) ? await seedFor(ctx, backend) : 0;
    await updateFigure(ctx, backend, head, 'view.update.postgres', (name) => postgresView(ctx, postgres, name, 'upsert'), {
      how: 'evolve: one tx.upsert per event (queued by the view, written as one statement per batch)',
    });
    await updateFigure(
      ctx,
      backend,
      head,
      'view.update.postgres.awaited',
      (name) => postgresView(ctx, postgres, name, 'awaited'),
      // Slow (one round trip per event): two rounds are enough to show it.
      {
        how: 'evolve: one awaited client.query upsert per event (a round trip each)',
        target: 'none',
        rounds: 2,
        remark: "for comparison, no target; the same baseline as view.update.postgres's",
      },
    );
    await updateFigure(
      ctx,
      backend,
      head,
      'view.update.postgres.batched',
      (name) => postgresView(ctx, postgres, name, 'evolveBatch'),
      { how: 'evolveBatch: one multi-row upsert (unnest, GROUP BY cart) per batch (default 500)', remark: "the raw side runs this view's own statement" },
    );
    await rebuildFigure(ctx, backend, head);
    await readYourWritesFigure(ctx, backend);
    await readYourWritesUnderLoadFigure(ctx, backend);
    await changeFeedFigure(ctx, backend);
  } catch (error) {
    ctx.fail('view (postgres)', error);
  } finally {
    await backend?.close();
  }
};

async function seedFor(ctx: BenchContext, backend: Backend): Promise<number> {
  const total = ctx.pick(20_000, 100_000);
  ctx.log(`${backend.adapter}: seeding ${total} events`);
  return seed(backend, total);
}

/** A view from nothing (a fresh name: new tables, no checkpoint) until it reflects the head. */
interface UpdateFigure {
  /** What the view's evolve does, for the note. */
  how: string;
  /** Default 0.85 (issue 18, against catch-up + raw writes); 'none' for a figure shown only for comparison. */
  target?: number | 'none';
  /** Default 5 quick / 7 full. */
  rounds?: number;
  /** More for the note (after the baseline's description). */
  remark?: string;
}

async function updateFigure(ctx: BenchContext, backend: Backend, head: number, bench: string, open: (name: string) => SqlView, figure: UpdateFigure): Promise<void> {
  const { how, target = 0.85, rounds = ctx.pick(5, 7), remark } = figure;
  if (!ctx.selected(bench)) return;
  let runs = 0;
  // Short: view and table names share PostgreSQL's 63-byte identifiers with the shadow suffix.
  const prefix = bench.split('.').slice(1).join('_');
  const raw = rawWrites(backend);
  const baseline = updateBaseline(ctx, backend, head, prefix, raw);
  const result = await compare({
    bench,
    unit: 'events/s',
    ops: 1,
    warmupOps: 1,
    rounds,
    eskit: sequential(async () => {
      const view = open(`${prefix}_${runs++}`);
      await view.start();
      try {
        await within(view.waitFor(head, { timeoutMs: 600_000 }), 600_000, `${view.name} to reach ${head}`);
      } finally {
        await view.stop();
      }
      return head;
    }),
    baseline: baseline.round,
    baselineLabel: `${backend.adapter}: catch-up (no-op Subscription) + ${raw.label}`,
    ...(target === 'none' ? {} : { target }),
    note:
      `op = ${head} events into a new view (${STREAM_LENGTH} events per cart), default batch size, timed from start() to waitFor(head); ${how}. ` +
      `Baseline op = a no-op Subscription catching up the same events + the raw writes into a fresh table of the view's layout ` +
      `(its CREATE TABLE and checkpoint row, then the batches), both timed; the raw writes take the events read once before, untimed ` +
      `(the catch-up times one read already, and a hand-written projection reads each event once), and commit a checkpoint with ` +
      `each batch, as the view does and as an exactly-once hand-written projection must` +
      (backend.adapter === 'postgres' ? `, ${RAW_DURABLE ? 'durably' : 'without waiting for the WAL flush, as the view commits its batches'}` : '') +
      (remark === undefined ? '' : `; ${remark}`),
  });
  emit(ctx, result, baseline.split());
}

/** The view's default batch size: the raw side writes batches of the same size. */
const RAW_BATCH = 500;

/**
 * The writes of the update figures' baseline, done raw with the driver into `table` (a fresh name):
 * its CREATE TABLE and checkpoint row, then per batch of RAW_BATCH events one transaction with the
 * batch's upserts and a checkpoint UPDATE.
 */
interface RawWrites {
  /** For the baseline label. */
  label: string;
  /** Untimed, once: the checkpoint table. */
  setup(): Promise<void>;
  write(events: readonly RawEvent[], table: string): void | Promise<void>;
  /** Untimed, after each write: the events the table counts (sum of `events`). */
  count(table: string): number | Promise<number>;
}

const RAW_CHECKPOINTS = 'raw_checkpoints';

function rawWrites(backend: Backend): RawWrites {
  return backend.adapter === 'sqlite' ? sqliteRawWrites(backend as SqliteBackend) : postgresRawWrites(backend as PostgresBackend);
}

/** better-sqlite3 on the store's own connection: per batch one `db.transaction` of prepared upserts, as the view's evolve runs them. */
function sqliteRawWrites(backend: SqliteBackend): RawWrites {
  const db = backend.store.database;
  return {
    label: `raw prepared upserts (1 transaction of ${RAW_BATCH} upserts + a checkpoint UPDATE per ${RAW_BATCH} events)`,
    async setup() {
      db.exec(`CREATE TABLE IF NOT EXISTS ${RAW_CHECKPOINTS} (name text PRIMARY KEY, position bigint NOT NULL)`);
    },
    write(events, table) {
      db.exec(`CREATE TABLE ${table} (cart text PRIMARY KEY, events bigint NOT NULL, quantity bigint NOT NULL)`);
      db.prepare(`INSERT INTO ${RAW_CHECKPOINTS} (name, position) VALUES (?, 0)`).run(table);
      const row = db.prepare(upsert(table, () => '?'));
      const checkpoint = db.prepare(`UPDATE ${RAW_CHECKPOINTS} SET position = ? WHERE name = ?`);
      const batch = db.transaction((from: number, to: number) => {
        for (let i = from; i < to; i++) {
          const event = events[i] as RawEvent;
          row.run(event.streamId, event.quantity);
        }
        checkpoint.run((events[to - 1] as RawEvent).position, table);
      });
      for (let from = 0; from < events.length; from += RAW_BATCH) batch(from, Math.min(from + RAW_BATCH, events.length));
    },
    count: (table) => Number(db.prepare(`SELECT coalesce(sum(events), 0) FROM ${table}`).pluck().get()),
  };
}

/**
 * Whether the raw PostgreSQL batches wait for their WAL flush. As the view's own batches: their
 * transactions commit with `synchronous_commit = off` (the writes and the checkpoint commit or vanish
 * together, and a tail lost to a server crash is applied again from the log), which a hand-written
 * projection may do on the same grounds. Set it to what PostgresViewBackend.applyLive does.
 */
const RAW_DURABLE = false;

/**
 * node-postgres on a client of the store's pool: per batch BEGIN (with `SET LOCAL synchronous_commit =
 * off` in the same message unless RAW_DURABLE), one upsert of the batch's rows (the `evolveBatch`
 * view's statement: unnest, rows of a cart summed), the checkpoint UPDATE, COMMIT: four round trips,
 * as many as the view's.
 */
function postgresRawWrites(backend: PostgresBackend): RawWrites {
  const s = `"${backend.schema}"`;
  const begin = RAW_DURABLE ? 'BEGIN' : 'BEGIN; SET LOCAL synchronous_commit = off';
  return {
    label: `raw batched upserts (${begin}; 1 unnest upsert statement; checkpoint UPDATE; COMMIT per ${RAW_BATCH} events)`,
    async setup() {
      await backend.pool.query(`CREATE TABLE IF NOT EXISTS ${s}.${RAW_CHECKPOINTS} (name text PRIMARY KEY, position bigint NOT NULL)`);
    },
    async write(events, table) {
      const t = `${s}.${table}`;
      const text = `INSERT INTO ${t} (cart, events, quantity)
                    SELECT cart, count(*), sum(quantity) FROM unnest($1::text[], $2::bigint[]) AS e(cart, quantity) GROUP BY cart
                    ON CONFLICT (cart) DO UPDATE SET events = ${t}.events + excluded.events, quantity = ${t}.quantity + excluded.quantity`;
      const checkpoint = `UPDATE ${s}.${RAW_CHECKPOINTS} SET position = $1 WHERE name = $2`;
      const client = await backend.pool.connect();
      try {
        await client.query(`CREATE TABLE ${t} (cart text PRIMARY KEY, events bigint NOT NULL, quantity bigint NOT NULL)`);
        await client.query({ text: `INSERT INTO ${s}.${RAW_CHECKPOINTS} (name, position) VALUES ($1, 0)`, values: [table] });
        for (let from = 0; from < events.length; from += RAW_BATCH) {
          const batch = events.slice(from, from + RAW_BATCH);
          await client.query(begin);
          await client.query({ text, values: [batch.map((event) => event.streamId), batch.map((event) => event.quantity)] });
          await client.query({ text: checkpoint, values: [(batch[batch.length - 1] as RawEvent).position, table] });
          await client.query('COMMIT');
        }
      } catch (error) {
        // Not back to the pool in the middle of a transaction.
        client.release(true);
        throw error;
      }
      client.release();
    },
    async count(table) {
      const result = await backend.pool.query<{ n: string }>(`SELECT coalesce(sum(events), 0) AS n FROM ${s}.${table}`);
      return Number(result.rows[0]?.n);
    },
  };
}

/**
 * What the raw writes take of an event: what a hand-written projection keeps. Not the decoded events
 * themselves: 100,000 of them held through the figure would grow the heap that every op's garbage
 * collection walks, eskit's side included.
 */
interface RawEvent {
  streamId: string;
  position: number;
  quantity: number;
}

/** Every event of the log, read once per backend (untimed) for the raw writes. */
const eventsRead = new WeakMap<Backend, Promise<RawEvent[]>>();

function readEvents(backend: Backend, head: number): Promise<RawEvent[]> {
  let read = eventsRead.get(backend);
  if (read === undefined) {
    read = (async () => {
      const events: RawEvent[] = [];
      for await (const event of backend.store.readAll()) events.push({ streamId: event.streamId, position: event.position, quantity: quantityOf(event) });
      if (events.length !== head) throw new Error(`read ${events.length} events, expected ${head}`);
      return events;
    })();
    eventsRead.set(backend, read);
  }
  return read;
}

/**
 * The baseline side of an update figure: per op, the catch-up (timed), then the raw writes (timed);
 * throughput = head / (catch-up + raw writes). Keeps both parts' times for the JSON line (medians of
 * the measured ops: the first call of the round is `compare`'s warm-up).
 */
function updateBaseline(ctx: BenchContext, backend: Backend, head: number, prefix: string, raw: RawWrites): { round: Round; split(): Record<string, unknown> } {
  const catchUp = catchUpOp(ctx, backend, head, `${prefix}_baseline`);
  const catchupMs: number[] = [];
  const rawMs: number[] = [];
  let calls = 0;
  let runs = 0;
  let ready = false;
  const round: Round = async (ops) => {
    const events = await readEvents(backend, head);
    if (!ready) {
      await raw.setup();
      ready = true;
    }
    const measured = calls++ > 0;
    const latenciesNs: number[] = [];
    let units = 0;
    let elapsedNs = 0;
    for (let i = 0; i < ops; i++) {
      const table = `raw_${prefix}_${runs++}`;
      const start = process.hrtime.bigint();
      units += await catchUp();
      const caughtUp = process.hrtime.bigint();
      await raw.write(events, table);
      const end = process.hrtime.bigint();
      // Short of the head would make the figure wrong, not merely slow.
      const counted = await raw.count(table);
      if (counted !== head) throw new Error(`the raw writes counted ${counted} events in ${table}, expected ${head}`);
      latenciesNs.push(Number(end - start));
      elapsedNs += Number(end - start);
      if (measured) {
        catchupMs.push(Number(caughtUp - start) / 1e6);
        rawMs.push(Number(end - caughtUp) / 1e6);
      }
    }
    return { units, elapsedNs, latenciesNs };
  };
  return {
    round,
    split: () => ({ catchup_ms: significant(median(catchupMs)), raw_writes_ms: significant(median(rawMs)), raw_batch: RAW_BATCH }),
  };
}

/** Prints a throughput figure's JSON line with `extras` (as `ctx.measure` prints it, plus those), and keeps it for the run's table. */
function emit(ctx: BenchContext, figure: Figure, extras: Record<string, unknown>): void {
  if (ctx instanceof BenchRun) ctx.figures.push(figure);
  process.stdout.write(`${JSON.stringify({ ...(JSON.parse(figureJson(figure)) as Record<string, unknown>), ...extras })}\n`);
  ctx.log(
    `${figure.bench}: ${Math.round(figure.value)} vs ${Math.round(figure.baseline)} ${figure.unit}, ratio ${figure.ratio.toFixed(3)}, ` +
      `p50 ${significant(figure.p50Ms, 2)} ms vs ${significant(figure.baselineP50Ms, 2)} ms (catch-up ${String(extras.catchup_ms)} + raw writes ${String(extras.raw_writes_ms)} ms)`,
  );
}

/** Rebuilds one view again and again: every op replays the whole log into shadow tables and swaps them in. */
async function rebuildFigure(ctx: BenchContext, backend: PostgresBackend, head: number): Promise<void> {
  const bench = 'view.rebuild.postgres';
  if (!ctx.selected(bench)) return;
  const view = postgresView(ctx, backend, 'rebuild', 'evolveBatch');
  await view.start();
  const stop = ctx.defer(() => view.stop());
  try {
    await view.waitFor(head, { timeoutMs: 600_000 });
    await ctx.measure({
      bench,
      unit: 'events/s',
      ops: 1,
      warmupOps: 1,
      rounds: ctx.pick(3, 5),
      eskit: sequential(async () => {
        const result = await view.rebuild();
        if (result.events !== head) throw new Error(`the rebuild applied ${result.events} events, expected ${head}`);
        return result.events;
      }),
      baseline: sequential(catchUpOp(ctx, backend, head, 'view_rebuild_baseline')),
      baselineLabel: 'postgres: Subscription catch-up, no-op handler',
      note: `op = rebuild of ${head} events into shadow tables (evolveBatch, batches of 1000) and the swap, while the live view runs`,
    });
  } finally {
    await stop();
  }
}

/** append (another store, another pool) → `waitFor(position)` resolving, the view idle at the head. */
async function readYourWritesFigure(ctx: BenchContext, backend: PostgresBackend): Promise<void> {
  const bench = 'view.readYourWrites.postgres';
  if (!ctx.selected(bench)) return;
  const writer = backend.openStore();
  const view = postgresView(ctx, backend, 'ryw', 'upsert');
  await view.start();
  const stop = ctx.defer(() => view.stop());
  try {
    await view.waitFor(await backend.store.headPosition(), { timeoutMs: 600_000 });
    let appended = 0;
    const eskit: LatencyRound = async (samples) => {
      const out: number[] = [];
      for (let i = 0; i < samples; i++) {
        await new Promise((resolve) => setTimeout(resolve, 2));
        const start = performance.now();
        const { position } = await writer.append(`ryw-${appended++ % 10}`, [EVENT]);
        await view.waitFor(position, { timeoutMs: 10_000 });
        out.push(performance.now() - start);
      }
      return out;
    };
    await measureLatency(ctx, {
      bench,
      samples: ctx.pick(100, 300),
      rounds: ctx.pick(3, 5),
      warmupSamples: 5,
      eskit,
      baseline: await notifyRoundTrip(backend),
      baselineLabel: 'pg: NOTIFY → LISTEN on two raw connections',
      targetMs: 10,
      note: 'from the append call to waitFor resolving: append, notification, the view transaction (one upsert + checkpoint), the view signal',
    });
  } finally {
    await stop();
  }
}

// ---------------------------------------------------------------------------------------------------
// Read-your-writes under write load

const UNDER_LOAD = 'view.readYourWrites.postgres.underLoad';
const WRITERS_FIXTURE = fileURLToPath(new URL('./fixtures/paced-writers.ts', import.meta.url));
/** Writer loops of the load, and each one's pace: 8 × one event every 8 ms ≈ 1,000 events/s in total. */
const LOAD_WRITERS = 8;
const LOAD_INTERVAL_MS = 8;
/** After "go", before the first timed sample: the writers reach their pace and the view its steady state. */
const LOAD_RAMP_MS = 250;


/**
 * The reader of the existing figure with other writers busy: 8 writer loops in a child process (another
 * node, a pool of its own) append one event every 8 ms each to their own streams while this process
 * appends one event (another node's store) and waits for the view (a node of its own) to cover it. The
 * baseline is the same reader with the writers paused: the view idle.
 */
async function readYourWritesUnderLoadFigure(ctx: BenchContext, backend: PostgresBackend): Promise<void> {
  if (!ctx.selected(UNDER_LOAD)) return;
  const reader = backend.openStore();
  const node = backend.openNode();
  const view = postgresView(ctx, node, 'ryw_load', 'upsert');
  const options: PacedWritersOptions = {
    connectionString: backend.connectionString,
    schema: backend.schema,
    writers: LOAD_WRITERS,
    intervalMs: LOAD_INTERVAL_MS,
    prefix: 'load',
  };
  const writers = new BenchChild(ctx, 'the writer process', WRITERS_FIXTURE, options);
  await view.start();
  const stop = ctx.defer(() => view.stop());
  try {
    await writers.next('ready', 0, 60_000);
    await view.waitFor(await backend.store.headPosition(), { timeoutMs: 600_000 });
    let appended = 0;
    /** The writers' pauses (warm-up included): what the load achieved. */
    const loads: PacedWritersPaused[] = [];
    const appendMs = { loaded: [] as number[], idle: [] as number[] };
    const rounds = (loaded: boolean): LatencyRound => async (samples) => {
      const out: number[] = [];
      const appends = loaded ? appendMs.loaded : appendMs.idle;
      if (loaded) {
        writers.send('go');
        await new Promise((resolve) => setTimeout(resolve, LOAD_RAMP_MS));
      }
      try {
        for (let i = 0; i < samples; i++) {
          await new Promise((resolve) => setTimeout(resolve, 2));
          const call = performance.now();
          const { position } = await reader.append(`ryw-load-${appended++ % 10}`, [EVENT]);
          const returned = performance.now();
          await view.waitFor(position, { timeoutMs: 10_000 });
          out.push(performance.now() - returned);
          appends.push(returned - call);
        }
      } finally {
        if (loaded) {
          const mark = writers.mark;
          writers.send('pause');
          loads.push((await writers.next('paused', mark, 30_000)) as unknown as PacedWritersPaused);
          // Untimed: the view takes in the writers' tail, so the idle side starts idle.
          await view.waitFor(await backend.store.headPosition(), { timeoutMs: 60_000 });
        }
      }
      return out;
    };
    const load = (): { rate: number; appended: number; seconds: number } => {
      const total = loads.reduce((sum, l) => sum + l.appended, 0);
      const seconds = loads.reduce((sum, l) => sum + l.ms, 0) / 1000;
      return { rate: total / seconds, appended: total, seconds };
    };
    const p50 = (values: readonly number[]): number => percentileSorted(Float64Array.from(values).sort(), 50);
    const target = LOAD_WRITERS * (1000 / LOAD_INTERVAL_MS);
    await measureLatency(ctx, {
      bench: UNDER_LOAD,
      samples: ctx.pick(80, 300),
      rounds: ctx.pick(3, 5),
      warmupSamples: 5,
      eskit: rounds(true),
      baseline: rounds(false),
      baselineLabel: 'the same reader with the writers paused (the view idle)',
      targetMs: 10,
      note:
        `from the append's return to waitFor resolving, while ${LOAD_WRITERS} writers in another process append one event every ` +
        `${LOAD_INTERVAL_MS} ms each (target ~${target}/s in total); the view on a postgres() node of its own, the reader's appends through another store`,
      extra: () => {
        const { rate, appended: events, seconds } = load();
        const writerP50 = p50(loads.map((l) => l.p50_ms));
        return {
          load_events_per_s: Math.round(rate),
          load_target_events_per_s: target,
          load_events: events,
          load_seconds: significant(seconds),
          load_writers: LOAD_WRITERS,
          load_append_p50_ms: significant(writerP50),
          append_p50_ms: significant(p50(appendMs.loaded)),
          baseline_append_p50_ms: significant(p50(appendMs.idle)),
        };
      },
    });
    const { rate, appended: events, seconds } = load();
    ctx.log(`  ${UNDER_LOAD}: the writers appended ${events} events in ${seconds.toFixed(1)} s of load (${Math.round(rate)}/s, target ${target}/s)`);
  } finally {
    await stop();
    await writers.end();
  }
}

// ---------------------------------------------------------------------------------------------------
// The change feed across processes

const CHANGE_FEED = 'view.changeFeed.crossProcess.postgres';
const LISTENER_FIXTURE = fileURLToPath(new URL('./fixtures/change-listener.ts', import.meta.url));
export const FEED_VIEW = 'feed';

/**
 * The view of the change-feed figure, built alike by this process (which runs it) and by the listener
 * process (bench/fixtures/change-listener.ts, which only follows it): postgresView's 'upsert' view with
 * `keysOf` the cart (stream), and the change feed's default debounceMs.
 */
export function feedView(store: PostgresEventStore, logger: Logger): SqlView {
  return new SqlView({
    name: FEED_VIEW,
    backend: { store, views: new PostgresViews({ store }) },
    setup: setupOf(FEED_VIEW),
    logger,
    keysOf: (event) => event.streamId,
    evolve: (event, { upsert }) => {
      upsert(tableOf(FEED_VIEW), { cart: event.streamId, events: 1, quantity: quantityOf(event) }, { key: ['cart'], increment: ['events', 'quantity'] });
    },
  });
}

/** CLOCK_MONOTONIC in ms: the clock the listener process reports on too. */
const monotonicMs = (): number => Number(process.hrtime.bigint()) / 1e6;

/**
 * append (another node's store) → a change feed listener in another process (a web node pushing the
 * view's changes) printing the change: the view runs on a postgres() node of its own in this process,
 * its commit NOTIFYs the schema's `views` channel, the listener process's SqlView of the same view (not
 * started) hears it, reads the range's events for their keys and publishes. Timed from the append call
 * to the moment this process reads the listener's line for a change at or past the appended position.
 * Baseline: a raw NOTIFY from this process to a raw LISTEN in the listener process, which prints a line
 * the same way (the same pipe on both sides).
 */
async function changeFeedFigure(ctx: BenchContext, backend: PostgresBackend): Promise<void> {
  if (!ctx.selected(CHANGE_FEED)) return;
  const writer = backend.openStore();
  const node = backend.openNode();
  const view = feedView(node.store, benchLogger(ctx));
  const notifier = await backend.client();
  const options: ChangeListenerOptions = { connectionString: backend.connectionString, schema: backend.schema, channel: `bench_feed_${process.pid}` };
  // The listener's lines as they arrive (both clocks taken on arrival), for the sample in progress.
  interface Arrived {
    line: Line;
    readMs: number;
    readMonoMs: number;
  }
  let arrived: Arrived[] = [];
  let wake: (() => void) | undefined;
  const listener = new BenchChild(ctx, 'the change listener process', LISTENER_FIXTURE, options, (line) => {
    if (line.ev !== 'change' && line.ev !== 'notified') return true;
    arrived.push({ line, readMs: performance.now(), readMonoMs: monotonicMs() });
    wake?.();
    return false;
  });
  /** The first line (since the sample began) that `matches`; waits for it. */
  const first = async (matches: (line: Line) => boolean, what: string): Promise<Arrived> => {
    const find = (): Arrived | undefined => arrived.find((a) => matches(a.line));
    let found = find();
    if (found === undefined) {
      found = await within(
        new Promise<Arrived>((resolve) => {
          wake = () => {
            const hit = find();
            if (hit !== undefined) resolve(hit);
          };
        }),
        10_000,
        what,
      ).finally(() => (wake = undefined));
    }
    return found;
  };
  // Where the time goes, per measured sample (the first call of each side is the warm-up).
  const split = {
    append: [] as number[],
    hint: [] as number[],
    publish: [] as number[],
    pipe: [] as number[],
    gap: [] as number[],
    baselinePipe: [] as number[],
    /** Changes with no hint heard before them (published after a poll). */
    unheard: 0,
  };
  let eskitCalls = 0;
  let baselineCalls = 0;
  await view.start();
  const stop = ctx.defer(() => view.stop());
  try {
    await listener.next('ready', 0, 60_000);
    await view.waitFor(await backend.store.headPosition(), { timeoutMs: 60_000 });
    let appended = 0;
    const eskit: LatencyRound = async (samples) => {
      const measured = eskitCalls++ > 0;
      const out: number[] = [];
      let previousAtMs: number | undefined;
      for (let i = 0; i < samples; i++) {
        await new Promise((resolve) => setTimeout(resolve, 2));
        const stream = `feed-${appended++ % 10}`;
        arrived = [];
        const startMono = monotonicMs();
        const start = performance.now();
        const { position } = await writer.append(stream, [EVENT]);
        const returned = performance.now();
        const change = await first((line) => line.ev === 'change' && (line.position as number) >= position, `the listener process to print a change at ${position}`);
        out.push(change.readMs - start);
        const keys = change.line.keys as string[] | null;
        // null: "anything changed" (allowed, but it should not happen here).
        if (keys !== null && !keys.includes(stream)) throw new Error(`the change at ${String(change.line.position)} has keys ${JSON.stringify(keys)}, not ${stream}`);
        if (!measured) continue;
        split.append.push(returned - start);
        const atMs = change.line.at_ms as number;
        const heardMs = change.line.heard_ms as number | null;
        if (heardMs === null) split.unheard++;
        else {
          split.hint.push(heardMs - startMono);
          split.publish.push(atMs - heardMs);
        }
        split.pipe.push(change.readMonoMs - atMs);
        if (previousAtMs !== undefined) split.gap.push(atMs - previousAtMs);
        previousAtMs = atMs;
      }
      return out;
    };
    let notified = 0;
    const baseline: LatencyRound = async (samples) => {
      const measured = baselineCalls++ > 0;
      const out: number[] = [];
      for (let i = 0; i < samples; i++) {
        await new Promise((resolve) => setTimeout(resolve, 2));
        const payload = String(notified++);
        arrived = [];
        const start = performance.now();
        await notifier.query({ name: 'bench_feed_notify', text: 'SELECT pg_notify($1, $2)', values: [options.channel, payload] });
        const line = await first((l) => l.ev === 'notified' && l.payload === payload, `the listener process to print notification ${payload}`);
        out.push(line.readMs - start);
        if (measured) split.baselinePipe.push(line.readMonoMs - (line.line.at_ms as number));
      }
      return out;
    };
    const p50 = (values: readonly number[]): number => significant(percentileSorted(Float64Array.from(values).sort(), 50));
    await measureLatency(ctx, {
      bench: CHANGE_FEED,
      samples: ctx.pick(100, 300),
      rounds: ctx.pick(3, 5),
      warmupSamples: 5,
      eskit,
      baseline,
      baselineLabel: 'pg: NOTIFY (this process, raw client) → LISTEN (raw client) in the listener process, which prints a line to this one',
      targetMs: 10,
      note:
        "from the append call (another node's store) to this process reading the line a change feed listener in another process printed: " +
        "the append, the view's transaction (one upsert + checkpoint, NOTIFY on the views channel) on a postgres() node here, the hint reaching the " +
        "listener process's SqlView of the same view (not started, keysOf the stream), its read of the range's events for the keys, the feed's " +
        'delivery with the default debounceMs (10: a change after a quiet spell goes out at once, then at most one per 10 ms; samples are 2 ms apart ' +
        'after the previous one arrived, so a sample can wait for that window), and the stdout pipe back (~0.05-0.2 ms, on both sides); ' +
        'hint_p50_ms / publish_p50_ms / pipe_p50_ms split it on CLOCK_MONOTONIC (append call → hint heard by the listener process; → listener called; → line read here); ' +
        'append_p50_ms: the append call alone; delivery_gap_p50_ms: between two deliveries in the listener process (about 10 when the debounce holds each sample back)',
      extra: () => ({
        append_p50_ms: p50(split.append),
        hint_p50_ms: p50(split.hint),
        publish_p50_ms: p50(split.publish),
        publish_p99_ms: significant(percentileSorted(Float64Array.from(split.publish).sort(), 99)),
        pipe_p50_ms: p50(split.pipe),
        delivery_gap_p50_ms: p50(split.gap),
        baseline_pipe_p50_ms: p50(split.baselinePipe),
        unheard: split.unheard,
      }),
    });
  } finally {
    await stop();
    await listener.end();
  }
}
