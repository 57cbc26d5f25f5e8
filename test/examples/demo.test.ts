import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { assertOneLeaderAtATime, assertSound, resultOf, runDemo } from './run-demo.js';
import type { DemoResult } from './run-demo.js';

const dirs: string[] = [];
const tempDir = (): string => {
  const dir = mkdtempSync(join(tmpdir(), 'eskit-demo-'));
  dirs.push(dir);
  return dir;
};
after(() => dirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

/** Reads the demo's SQLite file directly and checks it against the summary, independently of the demo's own checks. */
function assertDatabase(file: string, result: DemoResult, mailerSources = "source = 'confirmation-mailer'"): void {
  const db = new Database(file, { readonly: true });
  try {
    const count = (sql: string): number => db.prepare(sql).pluck().get() as number;
    assert.equal(count("SELECT count(*) FROM eskit_events WHERE type = 'TicketsBought'"), result.orders.bought);
    assert.equal(count("SELECT count(*) FROM eskit_events WHERE type = 'TicketsRefunded'"), result.orders.refunded);
    // The view: equal to a sum over the log, per concert.
    const fromLog = db
      .prepare(
        `SELECT stream_id AS concert,
                sum(CASE type WHEN 'TicketsBought' THEN json_extract(data, '$.quantity') ELSE -json_extract(data, '$.quantity') END) AS sold,
                sum(CASE type WHEN 'TicketsBought' THEN 1 ELSE -1 END) AS orders
         FROM eskit_events GROUP BY stream_id ORDER BY stream_id`,
      )
      .all();
    assert.deepEqual(db.prepare('SELECT concert, sold, orders FROM sales ORDER BY concert').all(), fromLog);
    // One mail per order with a valid address, none twice; the invalid ones are dead letters.
    assert.equal(count('SELECT count(*) FROM demo_mails'), result.mails.sent);
    assert.equal(count('SELECT max(sends) FROM demo_mails'), 1);
    assert.equal(
      count(
        `SELECT count(*) FROM eskit_events e WHERE e.type = 'TicketsBought' AND json_extract(e.data, '$.email') NOT LIKE '%.invalid'
           AND NOT EXISTS (SELECT 1 FROM demo_mails m WHERE m.order_id = json_extract(e.data, '$.orderId'))`,
      ),
      0,
    );
    assert.equal(count(`SELECT count(*) FROM eskit_dead_letters WHERE ${mailerSources} AND stage = 'execute'`), result.deadLetters);
    assert.equal(count("SELECT count(*) FROM eskit_dead_letters WHERE payload NOT LIKE '%.invalid%'"), 0);
  } finally {
    db.close();
  }
}

describe('the demo on SQLite', () => {
  it('`npm start` runs to completion in under a minute, creates its database under the data folder, and everything adds up', async () => {
    const dir = tempDir();
    const run = await runDemo(['--json'], { ESKIT_DEMO_DIR: join(dir, 'data') }, 'npm');
    const result = resultOf(run);
    assert.ok(run.ms < 60_000, `took ${run.ms} ms`);
    assert.equal(result.backend, 'sqlite');
    assertSound(result);
    // Piped output: a status line per quarter instead of a redrawn bar.
    assert.ok(/400\/400/.test(run.stdout), run.stdout);
    assert.match(run.stdout, /Checks: all passed/);
    const file = join(dir, 'data', 'demo.db');
    assert.ok(existsSync(file));
    assertDatabase(file, result);

    // A second run starts from a clean database.
    const again = resultOf(await runDemo(['--json'], { ESKIT_DEMO_DIR: join(dir, 'data') }));
    assert.equal(again.events, again.orders.bought + again.orders.refunded);
    assertDatabase(file, again);
  });

  it('runs with three worker processes on one SQLite file: one leader per subscription, a handoff, nothing lost or sent twice', async () => {
    const dir = tempDir();
    const result = resultOf(await runDemo(['--workers', '3', '--json'], { ESKIT_DEMO_DIR: dir }, 'npm'));
    assert.equal(result.workers, 3);
    assertSound(result);
    assertOneLeaderAtATime(result, ['sales', 'confirmation-mailer']);
    assertDatabase(join(dir, 'demo.db'), result);
  });

  it('runs the mailer in partitions in one process with --partitions (each partition its own checkpoint and dead letters)', async () => {
    const dir = tempDir();
    const run = await runDemo(['--partitions', '8', '--json'], { ESKIT_DEMO_DIR: dir });
    const result = resultOf(run);
    assertSound(result);
    assert.deepEqual(result.partitions, { count: 8 });
    assert.match(run.stdout, /in 8 partitions keyed by order id, all in this process/);
    assertDatabase(join(dir, 'demo.db'), result, "source GLOB 'confirmation-mailer#[0-7]/8'");
    const db = new Database(join(dir, 'demo.db'), { readonly: true });
    try {
      const lanes = db.prepare("SELECT name FROM eskit_checkpoints WHERE name GLOB 'confirmation-mailer#*' ORDER BY name").pluck().all();
      assert.deepEqual(lanes, Array.from({ length: 8 }, (_, partition) => `confirmation-mailer#${partition}/8`));
    } finally {
      db.close();
    }
  });

  it('refuses bad arguments and environments with exit code 2 and a message saying what to do', async () => {
    const dir = tempDir();
    const one = await runDemo(['--workers', '1'], { ESKIT_DEMO_DIR: dir });
    assert.equal(one.code, 2, one.stderr);
    assert.match(one.stderr, /--workers must be a whole number from 2/);
    const partitions = await runDemo(['--partitions', '1'], { ESKIT_DEMO_DIR: dir });
    assert.equal(partitions.code, 2, partitions.stderr);
    assert.match(partitions.stderr, /--partitions must be a whole number from 2 to 64/);
    const url = await runDemo([], { ESKIT_DEMO_DIR: dir, DATABASE_URL: 'mysql://localhost/shop' });
    assert.equal(url.code, 2, url.stderr);
    assert.match(url.stderr, /DATABASE_URL must be a PostgreSQL URL.*Unset it to run on SQLite/);
    const unknown = await runDemo(['--frobnicate'], { ESKIT_DEMO_DIR: dir });
    assert.equal(unknown.code, 2, unknown.stderr);
    assert.match(unknown.stderr, /Usage: npm start/);
  });
});
