// The `command` group: command handlers on a hot stream.
// - command.hotStream.postgres: 50 concurrent handle() calls on one stream (one op = one burst, on a
//   fresh stream, default retries), beside the same 50 commands run one after another. Unit: commands
//   that succeeded, per second.
// - command.hotStream.failures.postgres: the commands of those bursts that failed (target 0), and, for
//   comparison in the same run, how many fail when each command of a burst goes through a store object
//   of its own (as 50 processes would: no in-process queue, conflicts retried).
import pg from 'pg';
import { isEskitError } from '../src/core/errors.js';
import { CommandHandler } from '../src/decider/index.js';
import type { Decider } from '../src/decider/index.js';
import { PostgresEventStore } from '../src/postgres/index.js';
import type { BenchContext, BenchGroup } from './lib/context.js';
import { BenchRun } from './lib/context.js';
import { sequential } from './lib/measure.js';

const HOT = 'command.hotStream.postgres';
const FAILURES = 'command.hotStream.failures.postgres';
const BURST = 50;

type ItemAdded = { type: 'ItemAdded'; data: { sku: string; quantity: number } };
type AddItem = { sku: string };
/** A cart that holds at most 1000 items: every command reads the whole stream, as a real decider does. */
const cart: Decider<number, AddItem, ItemAdded> = {
  initialState: 0,
  decide: (items, command) => {
    if (items >= 1000) throw new Error('the cart is full');
    return { type: 'ItemAdded', data: { sku: command.sku, quantity: 1 } };
  },
  evolve: (items, event) => items + event.data.quantity,
};

export const commandBench: BenchGroup = async (ctx) => {
  if (!ctx.selected(HOT) && !ctx.selected(FAILURES)) return;
  try {
    await hotStream(ctx);
  } catch (error) {
    ctx.fail(HOT, error);
  }
};

/** Runs BURST commands at once on a fresh stream; returns how many succeeded. Only conflicts may fail. */
async function burst(streamId: string, handle: (streamId: string, index: number) => Promise<unknown>): Promise<number> {
  const settled = await Promise.allSettled(Array.from({ length: BURST }, (_, index) => handle(streamId, index)));
  let ok = 0;
  for (const outcome of settled) {
    if (outcome.status === 'fulfilled') ok++;
    else if (!isEskitError(outcome.reason, 'ESKIT_CONCURRENCY')) throw outcome.reason;
  }
  return ok;
}

async function hotStream(ctx: BenchContext): Promise<void> {
  const schema = `bench_${process.pid}_cmd`;
  const pool = new pg.Pool({ connectionString: ctx.postgresUrl, max: 10, connectionTimeoutMillis: 5000 });
  pool.on('error', () => undefined);
  const store = new PostgresEventStore<ItemAdded>({ pool, schema });
  // As many store objects as commands in a burst, on the same pool: 50 processes, as far as the queue can tell.
  const separate = Array.from({ length: BURST }, () => new PostgresEventStore<ItemAdded>({ pool, schema }));
  const close = ctx.defer(async () => {
    await Promise.all([store, ...separate].map((s) => s.close().catch(() => undefined)));
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => undefined);
    await pool.end();
  });
  try {
    await store.migrate();
    await Promise.all(separate.map((s) => s.migrate()));
    const handler = new CommandHandler({ store, decider: cart });
    let streams = 0;
    let commands = 0;
    let failed = 0;
    await ctx.measure({
      bench: HOT,
      unit: 'commands/s',
      ops: ctx.pick(4, 10),
      warmupOps: 1,
      rounds: ctx.pick(3, 7),
      eskit: sequential(async () => {
        const ok = await burst(`hot-${streams++}`, (streamId, index) => handler.handle(streamId, { sku: `sku-${index}` }));
        commands += BURST;
        failed += BURST - ok;
        return ok;
      }),
      baseline: sequential(async () => {
        const streamId = `one-by-one-${streams++}`;
        for (let index = 0; index < BURST; index++) await handler.handle(streamId, { sku: `sku-${index}` });
        return BURST;
      }),
      baselineLabel: `the same ${BURST} commands one after another`,
      note: `op = ${BURST} concurrent handle() calls on one fresh stream, default retries (5 attempts); units are commands that succeeded`,
    });

    // The same bursts without the in-process queue: one store object (and handler) per command.
    const handlers = separate.map((s) => new CommandHandler({ store: s, decider: cart }));
    let unqueuedCommands = 0;
    let unqueuedFailed = 0;
    const unqueuedStarted = performance.now();
    for (let i = 0; i < ctx.pick(2, 4); i++) {
      const ok = await burst(`unqueued-${streams++}`, (streamId, index) => (handlers[index] as (typeof handlers)[number]).handle(streamId, { sku: `sku-${index}` }));
      unqueuedCommands += BURST;
      unqueuedFailed += BURST - ok;
    }
    const unqueuedPerSecond = (unqueuedCommands - unqueuedFailed) / ((performance.now() - unqueuedStarted) / 1000);
    report(ctx, { commands, failed, unqueuedCommands, unqueuedFailed, unqueuedPerSecond });
  } finally {
    await close();
  }
}

function report(
  ctx: BenchContext,
  counts: { commands: number; failed: number; unqueuedCommands: number; unqueuedFailed: number; unqueuedPerSecond: number },
): void {
  const { commands, failed, unqueuedCommands, unqueuedFailed, unqueuedPerSecond } = counts;
  const line = {
    bench: FAILURES,
    value: failed,
    unit: 'failed commands',
    baseline: commands,
    ratio: Number((failed / commands).toFixed(3)),
    target_max: 0,
    unqueued_failed: unqueuedFailed,
    unqueued_commands: unqueuedCommands,
    unqueued_commands_per_s: Math.round(unqueuedPerSecond),
  };
  process.stdout.write(`${JSON.stringify(line)}\n`);
  const note =
    `${failed} of ${commands} commands failed in the bursts (target 0: ${failed === 0 ? 'ok' : 'MISSED'}); through a store object each ` +
    `(no in-process queue, as ${BURST} processes): ${unqueuedFailed} of ${unqueuedCommands} failed, ${Math.round(unqueuedPerSecond)} succeeded/s`;
  ctx.log(`${FAILURES}: ${note}`);
  if (ctx instanceof BenchRun) {
    ctx.figures.push({
      bench: FAILURES,
      unit: 'failed',
      value: failed,
      p50Ms: 0,
      p99Ms: 0,
      baseline: commands,
      baselineP50Ms: 0,
      baselineP99Ms: 0,
      ratio: failed / commands,
      rounds: 1,
      ops: commands / BURST,
      baselineLabel: 'commands run in the bursts',
      note,
    });
  }
}
