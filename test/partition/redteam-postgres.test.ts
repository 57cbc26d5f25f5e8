// Red team of the partitioned-runner core on PostgreSQL (issue 17): what only a real server shows.
// Each test failed before the fix named in its comment. Needs PostgreSQL (ESKIT_TEST_PG_URL): fails,
// never skips, without it.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { silentLogger } from '../../src/core/logger.js';
import { postgres } from '../../src/postgres/index.js';
import type { PostgresBackend } from '../../src/postgres/index.js';
import { Subscription } from '../../src/subscription/subscription.js';
import { createTestSchema, POSTGRES_URL } from '../support/postgres.js';
import type { TestSchema } from '../support/postgres.js';

type Ev = { type: 'Happened'; data: { n: number } };

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function schema(): Promise<TestSchema> {
  const created = await createTestSchema({ create: false, poolSize: 2 });
  cleanups.push(() => created.drop());
  return created;
}

/** A node: a backend of its own on the schema, with leader election (a lock connection) and members. */
function node(on: TestSchema): PostgresBackend<Ev> {
  const backend = postgres<Ev>({
    connectionString: POSTGRES_URL,
    schema: on.name,
    logger: silentLogger,
    listenLingerMs: 0,
    leaderElection: { logger: silentLogger, sessionTimeoutMs: 2_000 },
  });
  cleanups.push(() => backend.close());
  return backend;
}

const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe('Partitioned runners red team (PostgreSQL)', () => {
  it('nodes started at once with different partition counts: one refuses, every round (their first heartbeats run concurrently)', { timeout: 60_000 }, async () => {
    // Before: PostgreSQL reads the group as committed when each heartbeat statement began, so two first
    // heartbeats running at once each missed the other's row (279 of 300 in a probe): both nodes
    // passed the start-up check and both ran, one key handled in two partitionings on two nodes.
    const on = await schema();
    const a = node(on);
    const b = node(on);
    // Migrated and connected, so that the two starts below race on the heartbeat alone.
    await a.store.headPosition();
    await b.store.headPosition();
    for (let round = 0; round < 10; round++) {
      const name = `mixed-${round}`;
      const four = new Subscription<Ev>({ backend: a, name, partitions: 4, rebalanceIntervalMs: 50, logger: silentLogger, handler: () => undefined });
      const eight = new Subscription<Ev>({ backend: b, name, partitions: 8, rebalanceIntervalMs: 50, logger: silentLogger, handler: () => undefined });
      await Promise.all([four.start(), eight.start()]);
      const outcomes = [four, eight].map((subscription) => subscription.done.then(() => 'stopped', (error: Error & { code?: string }) => error.code ?? error.message));
      const first = await Promise.race([...outcomes, pause(2_000).then(() => 'both still running')]);
      await Promise.all([four.stop(), eight.stop()]);
      assert.equal(first, 'ESKIT_PARTITION_COUNT', `round ${round}`);
    }
  });
});
