// View micro-benchmark (not part of `npm test`): events/s into the counting view against a plain
// subscription's catch-up on the same backend in the same run, rebuild speed, and read-your-writes
// latency on PostgreSQL. Prints JSON lines. Run: npx tsx test/view/bench.ts [events]
import type { EventStore } from '../../src/core/store.js';
import { silentLogger } from '../../src/core/logger.js';
import { MemoryCheckpointStore } from '../../src/memory/index.js';
import { PostgresEventStore } from '../../src/postgres/index.js';
import { SqliteEventStore } from '../../src/sqlite/index.js';
import { Subscription } from '../../src/subscription/index.js';
import type { SqlView } from '../../src/view/index.js';
import { removeDatabase, tempDatabasePath } from '../sqlite/helpers.js';
import { createTestSchema } from '../support/postgres.js';
import { counted, pgCounter, sqliteCounter } from './helpers.js';
import type { TestEvent } from './helpers.js';

const events = Number(process.argv[2] ?? 50_000);

async function fill(store: EventStore<TestEvent>): Promise<number> {
  for (let i = 0; i < events; i += 500) await store.append(`s-${i % 1000}`, Array.from({ length: 500 }, (_, j) => counted((i + j) % 7)));
  return store.headPosition();
}

/** Events/s of a subscription whose handler does nothing (the ceiling for a view). */
async function catchUp(store: EventStore<TestEvent>, head: number): Promise<number> {
  let done: () => void = () => undefined;
  const finished = new Promise<void>((resolve) => (done = resolve));
  const subscription = new Subscription<TestEvent>({
    name: 'bench',
    store,
    checkpoints: new MemoryCheckpointStore(),
    batchSize: 500,
    logger: silentLogger,
    handler: (event) => {
      if (event.position === head) done();
    },
  });
  const started = performance.now();
  await subscription.start();
  await finished;
  const rate = head / ((performance.now() - started) / 1000);
  await subscription.stop();
  return rate;
}

async function measure(view: SqlView<TestEvent>, head: number): Promise<{ update: number; rebuild: number }> {
  let started = performance.now();
  await view.start();
  await view.waitFor(head, { timeoutMs: 600_000 });
  const update = head / ((performance.now() - started) / 1000);
  started = performance.now();
  await view.rebuild({ batchSize: 1000 });
  const rebuild = head / ((performance.now() - started) / 1000);
  return { update, rebuild };
}

const round = (value: number): number => Math.round(value);

{
  const path = tempDatabasePath('view-bench');
  const store = new SqliteEventStore<TestEvent>({ path });
  const head = await fill(store);
  const catchup = await catchUp(store, head);
  const view = sqliteCounter(store, { batchSize: 500 });
  const { update, rebuild } = await measure(view, head);
  console.log(JSON.stringify({ name: 'view.update.sqlite', events, catchup: round(catchup), update: round(update), ratio: +(update / catchup).toFixed(2), rebuild: round(rebuild) }));
  await view.stop();
  await store.close();
  removeDatabase(path);
}

for (const batched of [false, true]) {
  const schema = await createTestSchema({ create: false, poolSize: 10 });
  const store = new PostgresEventStore<TestEvent>({ pool: schema.pool, schema: schema.name });
  const head = await fill(store);
  const catchup = await catchUp(store, head);
  const view = pgCounter(store, { batchSize: 500, batched });
  const { update, rebuild } = await measure(view, head);
  const latencies: number[] = [];
  for (let i = 0; i < 300; i++) {
    const { position } = await store.append(`ryw-${i % 10}`, [counted(1)]);
    const started = performance.now();
    await view.waitFor(position);
    latencies.push(performance.now() - started);
  }
  latencies.sort((a, b) => a - b);
  console.log(
    JSON.stringify({
      name: 'view.update.postgres',
      evolve: batched ? 'evolveBatch' : 'evolve',
      events,
      catchup: round(catchup),
      update: round(update),
      ratio: +(update / catchup).toFixed(2),
      rebuild: round(rebuild),
      readYourWritesP50Ms: +(latencies[150] ?? 0).toFixed(2),
      readYourWritesP99Ms: +(latencies[297] ?? 0).toFixed(2),
    }),
  );
  await view.stop();
  await store.close();
  await schema.drop();
}
