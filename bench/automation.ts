// The `automation` group:
// - automation.throughput.*: an Automation executing one no-op to-do item per event from a backlog,
//   beside a plain Subscription catching up the same events on the same backend in the same run (the
//   automation is a subscription plus its to-do list, so the ratio is the cost of that list: keys,
//   per-key order, timeouts, completion records, the checkpoint held back by pending items).
// - automation.duplicatesPerKill.postgres: leaders (child processes) busy at ~300 events/s with
//   concurrency 8 are SIGKILLed again and again; the value is the most side effects that ran twice
//   after one kill, with default settings; the same run with inTransaction is reported beside it.
import type { CompletionStore, DeadLetterStore } from '../src/core/dead-letter.js';
import { Automation } from '../src/automation/index.js';
import type { BenchContext, BenchGroup } from './lib/context.js';
import { BenchRun } from './lib/context.js';
import { sequential } from './lib/measure.js';
import { countDuplicatesAfterKills } from '../test/automation/fixtures/kill-count.js';
import { uniqueSchemaName } from '../test/support/postgres.js';
import pg from 'pg';
import { benchLogger, catchUpOp, openPostgresBackend, openSqliteBackend, seed, STREAM_LENGTH, within } from './subscription.js';
import type { Adapter, Backend } from './subscription.js';

interface AutomationStores {
  deadLetters: DeadLetterStore;
  completions: CompletionStore;
}

const DUPLICATES = 'automation.duplicatesPerKill.postgres';

export const automationBench: BenchGroup = async (ctx) => {
  if (ctx.selected(DUPLICATES)) {
    try {
      await duplicatesFigure(ctx);
    } catch (error) {
      ctx.fail(DUPLICATES, error);
    }
  }
  for (const adapter of ['sqlite', 'postgres'] as const satisfies readonly Adapter[]) {
    const bench = `automation.throughput.${adapter}`;
    if (!ctx.selected(bench)) continue;
    let backend: Backend | undefined;
    try {
      if (adapter === 'sqlite') {
        const sqlite = await openSqliteBackend(ctx);
        backend = sqlite;
        await throughputFigure(ctx, sqlite, sqlite.eskit);
      } else {
        const postgres = await openPostgresBackend(ctx, 'auto');
        backend = postgres;
        await throughputFigure(ctx, postgres, postgres.eskit);
      }
    } catch (error) {
      ctx.fail(bench, error);
    } finally {
      await backend?.close();
    }
  }
};

async function throughputFigure(ctx: BenchContext, backend: Backend, stores: AutomationStores): Promise<void> {
  const total = ctx.pick(20_000, 100_000);
  ctx.log(`${backend.adapter}: seeding ${total} events`);
  const head = await seed(backend, total);
  await ctx.measure({
    bench: `automation.throughput.${backend.adapter}`,
    unit: 'items/s',
    ops: 1,
    warmupOps: 1,
    // One op is a whole catch-up (~0.1-1 s): more rounds than the default, for a steadier median.
    rounds: ctx.pick(5, 7),
    eskit: sequential(automationOp(ctx, backend, stores, head)),
    baseline: sequential(catchUpOp(ctx, backend, head, 'baseline')),
    baselineLabel: `${backend.adapter}: Subscription catch-up, no-op handler`,
    target: 0.5,
    note:
      `op = ${head} events → ${head} items (key = stream id, ${STREAM_LENGTH} events per stream), no-op execute, default settings ` +
      '(concurrency 8, maxPending 1000), dead letters and completions on the same backend; timed from start() to stop() resolved',
  });
}

/**
 * One run per call: a new Automation (a fresh name, so no checkpoint and no completions) from start()
 * until every item has executed and stop() has recorded them and saved the checkpoint. Returns the
 * items executed.
 */
function automationOp(ctx: BenchContext, backend: Backend, stores: AutomationStores, head: number): () => Promise<number> {
  let runs = 0;
  const logger = benchLogger(ctx);
  return async () => {
    let executed = 0;
    let finished!: () => void;
    const done = new Promise<void>((resolve) => (finished = resolve));
    const automation = new Automation({
      name: `automation-${runs++}`,
      store: backend.store,
      checkpoints: backend.checkpoints,
      deadLetters: stores.deadLetters,
      completions: stores.completions,
      logger,
      trigger: (event) => ({ key: event.streamId, payload: null }),
      execute: () => {
        if (++executed === head) finished();
      },
    });
    await automation.start();
    const failed = automation.whenStopped().then((status) => {
      if (status.state === 'failed') throw status.error ?? new Error(`automation ${automation.name} failed`);
    });
    await within(Promise.race([done, failed]), 300_000, `${automation.name} to execute ${head} items`);
    await automation.stop();
    await failed;
    const status = await automation.status();
    const dead = await stores.deadLetters.count({ source: automation.name });
    if (executed !== head || status.position !== head || dead !== 0) {
      throw new Error(
        `${automation.name} executed ${executed} items, checkpointed ${String(status.position)}, dead-lettered ${dead}; expected ${head}, ${head}, 0`,
      );
    }
    return executed;
  };
}

/**
 * Kills a busy leader `kills` times, first with a plain execute (default settings), then with the side
 * effect inTransaction, each in a schema of its own. Not a ratio to a raw baseline (there is none for a
 * count of duplicates): the value is the worst kill, the baseline the items a kill can catch in flight
 * (the concurrency), and the exactly-once run is in the note.
 */
async function duplicatesFigure(ctx: BenchContext): Promise<void> {
  const kills = ctx.pick(5, 8);
  const concurrency = 8;
  const run = async (transactional: boolean): Promise<number[]> => {
    const pool = new pg.Pool({ connectionString: ctx.postgresUrl, max: 6, connectionTimeoutMillis: 5000 });
    pool.on('error', () => undefined);
    const schema = uniqueSchemaName('bench_kill');
    const drop = ctx.defer(async () => {
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => undefined);
      await pool.end();
    });
    try {
      await pool.query(`CREATE SCHEMA "${schema}"`);
      ctx.log(`${DUPLICATES}: ${kills} kills of a busy leader, ${transactional ? 'inTransaction' : 'plain execute'}`);
      return await countDuplicatesAfterKills({ url: ctx.postgresUrl, schema, pool, kills, rate: 300, busyFor: 150, transactional, concurrency });
    } finally {
      await drop();
    }
  };
  const plain = await run(false);
  const transactional = await run(true);
  const worst = Math.max(...plain);
  const target = 8;
  const line = {
    bench: DUPLICATES,
    value: worst,
    unit: 'items',
    per_kill: plain,
    baseline: concurrency,
    ratio: Number((worst / concurrency).toFixed(3)),
    in_transaction_per_kill: transactional,
    kills,
    events_per_second: 300,
    concurrency,
    target_max: target,
  };
  process.stdout.write(`${JSON.stringify(line)}\n`);
  const note =
    `most side effects run twice after one SIGKILL: ${worst} (target <= ${target}: ${worst <= target ? 'ok' : 'MISSED'}); per kill ${plain.join(', ')}; ` +
    `with inTransaction: ${transactional.join(', ')}; ~300 events/s, concurrency 8, default record window`;
  ctx.log(`${DUPLICATES}: ${note}`);
  if (ctx instanceof BenchRun) {
    ctx.figures.push({
      bench: DUPLICATES,
      unit: 'items',
      value: worst,
      p50Ms: 0,
      p99Ms: 0,
      baseline: concurrency,
      baselineP50Ms: 0,
      baselineP99Ms: 0,
      ratio: worst / concurrency,
      rounds: 1,
      ops: kills,
      baselineLabel: 'items in flight at a kill (concurrency)',
      note,
    });
  }
}
