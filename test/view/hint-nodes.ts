// What the tests of views' commit hints share: two nodes on one schema (a writer and a reader, each a
// PostgresEventStore on its own pool, as two processes would be), and cleanup after each test.
import { afterEach } from 'node:test';
import type pg from 'pg';
import { silentLogger } from '../../src/core/logger.js';
import { PostgresEventStore, PostgresViews } from '../../src/postgres/index.js';
import { connectTestPool, createTestSchema } from '../support/postgres.js';
import type { TestSchema } from '../support/postgres.js';
import { waitUntil } from '../../src/testing/wait.js';
import type { ViewChange } from '../../src/view/index.js';
import { pgCounter } from './helpers.js';
import type { PgCounter, TestEvent } from './helpers.js';

/** Run after each test, last added first. */
export const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A reader poll far beyond every bound of the tests: a reader that resolves in time heard a hint. */
export const NO_POLL = 60_000;

export interface HintNode {
  store: PostgresEventStore<TestEvent>;
  host: { store: PostgresEventStore<TestEvent>; views: PostgresViews<TestEvent> };
}

export async function twoNodes(): Promise<{ schema: TestSchema; writer: HintNode; reader: HintNode }> {
  const schema = await createTestSchema({ create: false });
  cleanups.push(() => schema.drop());
  const node = async (pool: pg.Pool): Promise<HintNode> => {
    const store = new PostgresEventStore<TestEvent>({ pool, schema: schema.name, logger: silentLogger });
    cleanups.push(() => store.close());
    await store.migrate();
    return { store, host: { store, views: new PostgresViews({ store }) } };
  };
  const writer = await node(schema.pool);
  const otherPool = await connectTestPool(4);
  cleanups.push(() => otherPool.end());
  const reader = await node(otherPool);
  return { schema, writer, reader };
}

/** Stops the view after the test. */
export function track<V extends { stop(): Promise<void> }>(view: V): V {
  cleanups.push(() => view.stop());
  return view;
}

/** The pids of the stores' LISTEN connections (named after the schema). */
export async function listenerPids(schema: TestSchema): Promise<number[]> {
  const result = await schema.pool.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE application_name = $1', [`eskit listen ${schema.name}`]);
  return result.rows.map((row) => row.pid);
}

/**
 * On the reader: the counter view as a process that does not run it sees it (no poll within the tests'
 * bounds, keys by stream, no throttle), with every change it publishes recorded.
 */
export function follow(reader: HintNode): { follower: PgCounter; changes: ViewChange[] } {
  const follower = pgCounter(reader.host, { checkpointPollMs: NO_POLL, keysOf: (event) => event.streamId, debounceMs: 0 });
  const changes: ViewChange[] = [];
  cleanups.push(follower.changes.subscribe((change) => void changes.push(change)));
  return { follower, changes };
}

/**
 * Once the writer LISTENs: a reader of the pid of the reader's LISTEN connection (the one that is not
 * the writer's), for terminating it.
 */
export async function readerListenerPid(schema: TestSchema, writer: HintNode): Promise<() => Promise<number | undefined>> {
  await waitUntil(() => writer.store.listening, { message: 'the writer to LISTEN' });
  const [writerPid] = await listenerPids(schema);
  return async () => (await listenerPids(schema)).find((pid) => pid !== writerPid);
}
