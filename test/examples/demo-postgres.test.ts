import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createTestSchema, POSTGRES_URL } from '../support/postgres.js';
import type { TestSchema } from '../support/postgres.js';
import type { StatusReport } from '../../src/cli/commands/status.js';
import { cli, parseJson } from '../cli/helpers.js';
import { assertOneLeaderAtATime, assertSound, resultOf, runDemo } from './run-demo.js';
import type { DemoResult } from './run-demo.js';

/**
 * Checks the demo's schema directly against the summary, independently of the demo's own checks.
 * `mailerSources`: the dead letters' sources (partitioned, each partition's name).
 */
async function assertDatabase(schema: TestSchema, result: DemoResult, mailerSources = "source = 'confirmation-mailer'"): Promise<void> {
  const s = `"${schema.name}"`;
  const count = async (sql: string): Promise<number> => Number((await schema.pool.query<{ n: string }>(sql)).rows[0]?.n);
  assert.equal(await count(`SELECT count(*) AS n FROM ${s}.events WHERE type = 'TicketsBought'`), result.orders.bought);
  assert.equal(await count(`SELECT count(*) AS n FROM ${s}.events WHERE type = 'TicketsRefunded'`), result.orders.refunded);
  const fromLog = await schema.pool.query(
    `SELECT stream_id AS concert,
            sum(CASE type WHEN 'TicketsBought' THEN (data->>'quantity')::int ELSE -(data->>'quantity')::int END)::int AS sold,
            sum(CASE type WHEN 'TicketsBought' THEN 1 ELSE -1 END)::int AS orders
     FROM ${s}.events GROUP BY stream_id ORDER BY stream_id`,
  );
  const view = await schema.pool.query(`SELECT concert, sold, orders FROM ${s}.sales ORDER BY concert`);
  assert.deepEqual(view.rows, fromLog.rows);
  assert.equal(await count(`SELECT count(*) AS n FROM ${s}.demo_mails`), result.mails.sent);
  assert.equal(await count(`SELECT max(sends) AS n FROM ${s}.demo_mails`), 1);
  assert.equal(
    await count(
      `SELECT count(*) AS n FROM ${s}.events e WHERE e.type = 'TicketsBought' AND e.data->>'email' NOT LIKE '%.invalid'
         AND NOT EXISTS (SELECT 1 FROM ${s}.demo_mails m WHERE m.order_id = e.data->>'orderId')`,
    ),
    0,
  );
  assert.equal(await count(`SELECT count(*) AS n FROM ${s}.dead_letters WHERE ${mailerSources} AND stage = 'execute'`), result.deadLetters);
  assert.equal(await count(`SELECT count(*) AS n FROM ${s}.dead_letters WHERE payload::text NOT LIKE '%.invalid%'`), 0);
}

describe('the demo on PostgreSQL', () => {
  it('runs to completion with DATABASE_URL in its own schema, and everything adds up', async () => {
    const schema = await createTestSchema({ create: false, prefix: 'eskit_demo_t' });
    try {
      const env = { DATABASE_URL: POSTGRES_URL, ESKIT_DEMO_SCHEMA: schema.name };
      const result = resultOf(await runDemo(['--json'], env));
      assert.equal(result.backend, 'postgres');
      assertSound(result);
      await assertDatabase(schema, result);
      // A rerun drops the schema first: the same totals again, not twice as many.
      const again = resultOf(await runDemo(['--json'], env));
      assert.equal(again.events, again.orders.bought + again.orders.refunded);
      await assertDatabase(schema, again);
    } finally {
      await schema.drop();
    }
  });

  it('runs with three workers: exactly one leader per subscription at a time, a handoff when the leader stops, nothing lost or sent twice', async () => {
    const schema = await createTestSchema({ create: false, prefix: 'eskit_demo_t' });
    try {
      const result = resultOf(await runDemo(['--workers', '3', '--json'], { DATABASE_URL: POSTGRES_URL, ESKIT_DEMO_SCHEMA: schema.name }));
      assert.equal(result.workers, 3);
      assertSound(result);
      assertOneLeaderAtATime(result, ['sales', 'confirmation-mailer']);
      await assertDatabase(schema, result);
      // The tokens the workers reported are the ones PostgreSQL fenced with: each subscription's
      // checkpoint was last claimed with the token of its last reported leader.
      const checkpoints = await schema.pool.query<{ name: string; token: string }>(`SELECT name, fencing_token AS token FROM "${schema.name}".checkpoints`);
      for (const name of ['sales', 'confirmation-mailer']) {
        const reported = Math.max(...result.leads.filter((l) => l.name === name).map((l) => l.token));
        const stored = checkpoints.rows.find((row) => row.name === name);
        assert.equal(Number(stored?.token), reported, `${name}: ${JSON.stringify(checkpoints.rows)}`);
      }
    } finally {
      await schema.drop();
    }
  });

  it('runs with three workers and --partitions 12: the partitions shared out, one leader per partition at a time, moving when a worker stops', async () => {
    const schema = await createTestSchema({ create: false, prefix: 'eskit_demo_t' });
    try {
      const run = await runDemo(['--workers', '3', '--partitions', '12', '--json'], { DATABASE_URL: POSTGRES_URL, ESKIT_DEMO_SCHEMA: schema.name });
      const result = resultOf(run);
      assert.equal(result.workers, 3);
      assertSound(result);
      await assertDatabase(schema, result, "source ~ '^confirmation-mailer#[0-9]+/12$'");
      // The output shows the map and the moves.
      assert.match(run.stdout, /the mailer's 12 partitions, shared out:\n(\s+worker \d\s+4 partitions\s+#.*\n){3}/);
      assert.match(run.stdout, /confirmation-mailer#\d+\/12 moved from worker \d to worker \d, \d+ ms after it let go/);
      assert.match(run.stdout, /the mailer's 12 partitions, shared out over the 2 workers left:\n(\s+worker \d\s+6 partitions\s+#.*\n){2}/);

      const partitions = result.partitions;
      assert.ok(partitions?.before && partitions.after && partitions.moved && partitions.stopped !== undefined, JSON.stringify(partitions));
      assert.equal(partitions.count, 12);
      const all = (map: Record<string, number[]>): number[] => Object.values(map).flat().sort((a, b) => a - b);
      const twelve = Array.from({ length: 12 }, (_, partition) => partition);
      assert.deepEqual(all(partitions.before), twelve, 'each partition led by one worker');
      assert.deepEqual(Object.values(partitions.before).map((held) => held.length), [4, 4, 4], 'ceil(12 / 3) each');
      assert.deepEqual(all(partitions.after), twelve);
      assert.deepEqual(Object.values(partitions.after).map((held) => held.length), [6, 6], 'ceil(12 / 2) each');
      const stopped = String(partitions.stopped);
      assert.ok(!(stopped in partitions.after), 'the stopped worker leads nothing');
      const movedOff = partitions.moved.filter((move) => move.from === partitions.stopped).map((move) => move.partition);
      assert.deepEqual(movedOff.sort((a, b) => a - b), partitions.before[stopped], "the stopped worker's partitions moved, each once");

      // Per partition, in token order: each lead ended with a release before the next began; the view
      // was led whole and changed hands.
      assertOneLeaderAtATime(result, ['sales'], false);
      const lanes = new Set(result.leads.map((lead) => lead.name).filter((name) => name.startsWith('confirmation-mailer#')));
      assert.equal(lanes.size, 12);
      for (const lane of lanes) {
        const leads = result.leads.filter((lead) => lead.name === lane).sort((a, b) => a.token - b.token);
        leads.forEach((lead, i) => {
          assert.equal(lead.how, 'released', `${lane}: worker ${lead.worker} let go cleanly`);
          const next = leads[i + 1];
          if (next) assert.ok(lead.to !== null && lead.to <= next.from, `${lane}: token ${lead.token} ended before token ${next.token} began`);
        });
      }
      // Each partition's checkpoint was last claimed with the token of its last reported leader.
      const checkpoints = await schema.pool.query<{ name: string; token: string }>(`SELECT name, fencing_token AS token FROM "${schema.name}".checkpoints`);
      for (const lane of lanes) {
        const reported = Math.max(...result.leads.filter((lead) => lead.name === lane).map((lead) => lead.token));
        assert.equal(Number(checkpoints.rows.find((row) => row.name === lane)?.token), reported, lane);
      }

      // `eskit status` shows the mailer as one runner of 12 partitions, each at the end of its work.
      const status = parseJson<StatusReport>(await cli(['status', 'confirmation-mailer', '--json', '--db', POSTGRES_URL, '--schema', schema.name]));
      const mailer = status.entries.find((entry) => entry.partitions);
      assert.equal(mailer?.partitions?.count, 12);
      assert.equal(mailer?.partitions?.entries.length, 12);
      assert.deepEqual(mailer?.partitions?.unowned, twelve, 'every worker stopped');
      assert.equal(mailer?.deadLetters.dead, result.deadLetters);
    } finally {
      await schema.drop();
    }
  });

  it('says what to do when PostgreSQL is not reachable', async () => {
    const run = await runDemo([], { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/nothing' });
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /PostgreSQL at postgres:\/\/postgres@127\.0\.0\.1:1\/nothing is not reachable .*unset DATABASE_URL to run on SQLite/);
  });
});
