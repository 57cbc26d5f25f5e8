// The `decider` group: a CommandHandler on a long stream, loading from snapshots beside full replay.
// - decider.load.snapshot.{sqlite,postgres}: commands/s on a stream seeded with 10,000 events, the
//   handler writing a snapshot every 100 events (a load reads the snapshot and at most 99 events after
//   it); baseline: the same commands through a handler without snapshots (every load folds the whole
//   stream) on a stream of the same length. Each command appends one event, so both streams grow by the
//   same count during the run. Target ratio >= 20 (issue 19).
import type { Backend as EskitBackend } from '../src/core/backend.js';
import { CommandHandler } from '../src/decider/index.js';
import type { Decider } from '../src/decider/index.js';
import type { BenchContext, BenchGroup } from './lib/context.js';
import { sequential } from './lib/measure.js';
import { openPostgresBackend, openSqliteBackend } from './subscription.js';
import type { Adapter, Backend } from './subscription.js';

const STREAM_EVENTS = 10_000;
const SNAPSHOT_EVERY = 100;
const SEED_BATCH = 500;

type ItemAdded = { type: 'ItemAdded'; data: { cartId: string; sku: string; quantity: number; unitPrice: number; currency: string; note: string } };
type AddItem = { sku: string; quantity: number };
interface Cart {
  lines: number;
  quantity: number;
  total: number;
}

/** A cart that sums its lines: a load folds every event it reads, as a real decider does. */
const cart: Decider<Cart, AddItem, ItemAdded> = {
  initialState: () => ({ lines: 0, quantity: 0, total: 0 }),
  decide: (_state, command) => ({
    type: 'ItemAdded',
    data: { cartId: 'cart-7f3a', sku: command.sku, quantity: command.quantity, unitPrice: 1999, currency: 'EUR', note: 'gift wrap, leave at the door' },
  }),
  evolve: (state, event) => ({ lines: state.lines + 1, quantity: state.quantity + event.data.quantity, total: state.total + event.data.quantity * event.data.unitPrice }),
};

export const deciderBench: BenchGroup = async (ctx) => {
  for (const adapter of ['sqlite', 'postgres'] as const) {
    const bench = `decider.load.snapshot.${adapter}`;
    if (!ctx.selected(bench)) continue;
    let backend: Backend | undefined;
    try {
      backend = adapter === 'sqlite' ? await openSqliteBackend(ctx) : await openPostgresBackend(ctx, 'decider');
      await snapshotFigure(ctx, adapter, backend);
    } catch (error) {
      ctx.fail(bench, error);
    } finally {
      await backend?.close();
    }
  }
};

async function seedStream(backend: Backend, streamId: string): Promise<void> {
  for (let written = 0; written < STREAM_EVENTS; written += SEED_BATCH) {
    const batch = Array.from({ length: SEED_BATCH }, (_, i) => cart.decide(cart.initialState as never, { sku: `sku-${written + i}`, quantity: 1 + ((written + i) % 3) }) as ItemAdded);
    await backend.store.append(streamId, batch);
  }
}

async function snapshotFigure(ctx: BenchContext, adapter: Adapter, backend: Backend): Promise<void> {
  ctx.log(`${adapter}: seeding two streams of ${STREAM_EVENTS} events`);
  await seedStream(backend, 'cart-snapshots');
  await seedStream(backend, 'cart-replay');
  const eskit = backend.eskit as EskitBackend<ItemAdded>;
  const withSnapshots = new CommandHandler({ backend: eskit, decider: cart, snapshots: { version: 1, every: SNAPSHOT_EVERY } });
  const fullReplay = new CommandHandler({ backend: eskit, decider: cart });
  let commands = 0;
  const command = (): AddItem => ({ sku: `sku-${commands++}`, quantity: 1 });
  await ctx.measure({
    bench: `decider.load.snapshot.${adapter}`,
    unit: 'commands/s',
    ops: ctx.pick(20, 60),
    // The first command finds no snapshot: it replays in full and writes one.
    warmupOps: 3,
    rounds: ctx.pick(3, 5),
    eskit: sequential(async () => {
      await withSnapshots.handle('cart-snapshots', command());
      return 1;
    }),
    baseline: sequential(async () => {
      await fullReplay.handle('cart-replay', command());
      return 1;
    }),
    baselineLabel: `the same commands without snapshots (each load folds the whole ${STREAM_EVENTS / 1000}k-event stream)`,
    target: 20,
    note: `a ${STREAM_EVENTS}-event stream, a snapshot every ${SNAPSHOT_EVERY} events written after the command (at most ${SNAPSHOT_EVERY - 1} events read after it)`,
  });
  await withSnapshots.flushSnapshots();
  const snapshot = await eskit.snapshots?.load('cart-snapshots', 'decider');
  const head = await backend.store.streamVersion('cart-snapshots');
  ctx.log(`${adapter}: stream at ${head}, snapshot at ${snapshot?.streamVersion ?? 'none'}`);
  const [a, b] = await Promise.all([withSnapshots.aggregate('cart-snapshots'), fullReplay.aggregate('cart-snapshots')]);
  if (JSON.stringify(a) !== JSON.stringify(b)) throw new Error(`snapshot + tail differs from a full replay: ${JSON.stringify(a)} vs ${JSON.stringify(b)}`);
}
