// The `view` group: a state view with one upsert per event catching up a backlog, beside a plain
// Subscription catching up the same events on the same backend in the same run (a view is a
// subscription whose batches commit together with its checkpoint, so the ratio is the cost of those
// transactions and of the view's own writes); a rebuild into shadow tables; and read-your-writes
// (append → `waitFor` resolving) beside a raw NOTIFY → LISTEN round trip.
import { fileURLToPath } from 'node:url';
import type { EventShape, Recorded } from '../src/core/event.js';
import { PostgresViews } from '../src/postgres/index.js';
import type { PostgresEventStore } from '../src/postgres/index.js';
import { SqliteViews } from '../src/sqlite/index.js';
import { SqlView } from '../src/view/index.js';
import type { BenchContext, BenchGroup } from './lib/context.js';
import type { PacedWritersOptions, PacedWritersPaused } from './fixtures/paced-writers.js';
import { BenchChild } from './lib/child.js';
import { sequential } from './lib/measure.js';
import { percentileSorted, significant } from './lib/stats.js';
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
    // The under-load figure needs no backlog: seeded only for the others (as before when they run).
    const head = figures.slice(1, -1).some((bench) => ctx.selected(bench)) ? await seedFor(ctx, backend) : 0;
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
      { how: 'evolve: one awaited client.query upsert per event (a round trip each); for comparison, no target', target: 'none', rounds: 2 },
    );
    await updateFigure(
      ctx,
      backend,
      head,
      'view.update.postgres.batched',
      (name) => postgresView(ctx, postgres, name, 'evolveBatch'),
      { how: 'evolveBatch: one multi-row upsert (unnest, GROUP BY cart) per batch (default 500)' },
    );
    await rebuildFigure(ctx, backend, head);
    await readYourWritesFigure(ctx, backend);
    await readYourWritesUnderLoadFigure(ctx, backend);
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
  /** Default 0.5 (the target); 'none' for a figure shown only for comparison. */
  target?: number | 'none';
  /** Default 5 quick / 7 full. */
  rounds?: number;
}

async function updateFigure(ctx: BenchContext, backend: Backend, head: number, bench: string, open: (name: string) => SqlView, figure: UpdateFigure): Promise<void> {
  const { how, target = 0.5, rounds = ctx.pick(5, 7) } = figure;
  if (!ctx.selected(bench)) return;
  let runs = 0;
  // Short: view and table names share PostgreSQL's 63-byte identifiers with the shadow suffix.
  const prefix = bench.split('.').slice(1).join('_');
  await ctx.measure({
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
    baseline: sequential(catchUpOp(ctx, backend, head, `${prefix}_baseline`)),
    baselineLabel: `${backend.adapter}: Subscription catch-up, no-op handler`,
    ...(target === 'none' ? {} : { target }),
    note: `op = ${head} events into a new view (${STREAM_LENGTH} events per cart), default batch size, timed from start() to waitFor(head); ${how}`,
  });
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
