import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';

describe('the demo (npm start)', () => {
  it('runs to completion on SQLite, exits 0, and its sales view matches the log', () => {
    const dir = mkdtempSync(join(tmpdir(), 'eskit-demo-'));
    try {
      const run = spawnSync(process.execPath, ['--import', 'tsx', 'examples/demo.ts'], {
        env: { ...process.env, ESKIT_DEMO_DIR: dir },
        encoding: 'utf8',
        timeout: 60_000,
      });
      assert.equal(run.status, 0, `demo failed:\n${run.stdout}\n${run.stderr}`);
      const summary = /Summary: (\d+) orders bought, (\d+) refunded/.exec(run.stdout);
      assert.ok(summary, run.stdout);
      const mails = /(\d+) confirmation mails sent/.exec(run.stdout);
      assert.equal(mails?.[1], summary[1], 'one confirmation mail per order bought');

      const db = new Database(join(dir, 'demo.db'), { readonly: true });
      try {
        const bought = db.prepare("SELECT count(*) AS n FROM eskit_events WHERE type = 'TicketsBought'").get() as { n: number };
        const refunded = db.prepare("SELECT count(*) AS n FROM eskit_events WHERE type = 'TicketsRefunded'").get() as { n: number };
        assert.equal(bought.n, Number(summary[1]));
        assert.equal(refunded.n, Number(summary[2]));
        const view = db.prepare('SELECT sum(orders) AS orders FROM demo_sales').get() as { orders: number };
        assert.equal(view.orders, bought.n - refunded.n);
      } finally {
        db.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
