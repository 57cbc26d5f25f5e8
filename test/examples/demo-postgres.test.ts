import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createTestSchema, POSTGRES_URL } from '../support/postgres.js';
import type { TestSchema } from '../support/postgres.js';
import { assertOneLeaderAtATime, assertSound, resultOf, runDemo } from './run-demo.js';
import type { DemoResult } from './run-demo.js';

/** Checks the demo's schema directly against the summary, independently of the demo's own checks. */
async function assertDatabase(schema: TestSchema, result: DemoResult): Promise<void> {
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
  assert.equal(await count(`SELECT count(*) AS n FROM ${s}.dead_letters WHERE source = 'confirmation-mailer' AND stage = 'execute'`), result.deadLetters);
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

  it('says what to do when PostgreSQL is not reachable', async () => {
    const run = await runDemo([], { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/nothing' });
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /PostgreSQL at postgres:\/\/postgres@127\.0\.0\.1:1\/nothing is not reachable .*unset DATABASE_URL to run on SQLite/);
  });
});
