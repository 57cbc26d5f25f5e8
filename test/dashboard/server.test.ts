// The dashboard's server where a test needs to steer what the database answers (a proxy over the
// admin surface of a real SQLite database): rates of partitioned runners, one consistent read of the
// dead letters per sample, the status codes of a wrong method, and a rebuild asked for after close().
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { CliDatabase } from '../../src/cli/database.js';
import { Rebuilds } from '../../src/cli/dashboard/actions.js';
import { HttpError } from '../../src/cli/dashboard/http.js';
import { startDashboard } from '../../src/cli/dashboard/index.js';
import type { DashboardState, RunningDashboard } from '../../src/cli/dashboard/index.js';
import type { Admin, DeadLetterCount, SubscriptionRow } from '../../src/core/admin.js';
import { silentLogger } from '../../src/core/logger.js';
import { waitUntil } from '../../src/testing/wait.js';
import { createWorld } from '../cli/world.js';
import type { World } from '../cli/world.js';
import { dashboardOn, openLive, openOn, send } from './world.js';

/** `real` with some of its admin calls answered by `overrides` (the rest pass through). */
function steered(real: CliDatabase, overrides: Partial<Pick<Admin, 'subscriptions' | 'deadLetterCounts' | 'viewTables'>>): CliDatabase {
  const admin = new Proxy(real.admin, {
    get(target, name, receiver) {
      const override = (overrides as Record<string | symbol, unknown>)[name];
      if (typeof override === 'function') return override;
      const value = Reflect.get(target, name, receiver) as unknown;
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
  return { ...real, admin, close: () => real.close() };
}

describe('dashboard server, steered database answers', () => {
  let world: World;
  before(async () => {
    world = await createWorld('sqlite');
  });
  after(async () => {
    await world?.stop();
  });

  it("a partitioned runner's rate is the rate through its checkpoint, not its partitions' rates summed (each partition passes every event)", async () => {
    const real = await openOn(world);
    let moved = 0;
    const lane = (partition: number): SubscriptionRow => ({
      name: `lanes#${partition}/2`,
      position: 10 + moved,
      checkpointToken: undefined,
      updatedAt: new Date(),
      head: 10 + moved,
      lag: 0,
      lock: undefined,
    });
    const db = steered(real, { subscriptions: async () => [...(await real.admin.subscriptions()), lane(0), lane(1)] });
    const dashboard = await startDashboard({ database: db, port: 0, intervalMs: 20, logger: silentLogger });
    const client = await openLive(dashboard.port);
    try {
      await client.waitFor('state', (data) => (data as DashboardState).entries.some((entry) => entry.name === 'lanes'));
      // Both partitions pass the same 100 events between two samples: 100 events went through the runner.
      moved = 100;
      const seen = (await client.waitFor('state', (data) => ((data as DashboardState).entries.find((entry) => entry.name === 'lanes')?.rate ?? 0) > 0)) as DashboardState;
      const entry = seen.entries.find((candidate) => candidate.name === 'lanes');
      const lanes = entry?.partitions?.entries.map((partition) => partition.rate) ?? [];
      assert.equal(lanes.length, 2);
      assert.ok(lanes.every((rate) => rate > 0), JSON.stringify(lanes));
      assert.ok(Math.abs((entry?.rate ?? 0) - (lanes[0] ?? 0)) < 0.01, `the runner's rate ${String(entry?.rate)} is one partition's (${String(lanes[0])}), not their sum`);
    } finally {
      client.close();
      await dashboard.close();
      await real.close();
    }
  });

  it("one sample reads the dead letters once: the total and each runner's count agree", async () => {
    const real = await openOn(world);
    let reads = 0;
    // Every read finds one more letter of notifier than the read before.
    const deadLetterCounts = async (): Promise<DeadLetterCount[]> => {
      const read = (reads += 1);
      const counts = await real.admin.deadLetterCounts();
      return [...counts, { source: 'notifier', stage: 'execute', status: 'dead', count: read }];
    };
    const dashboard = await startDashboard({ database: steered(real, { deadLetterCounts }), port: 0, intervalMs: 20, logger: silentLogger });
    try {
      for (let sample = 0; sample < 3; sample++) {
        const seen = await waitUntil(async () => {
          const current = (await send(dashboard.port, '/api/state')).json as DashboardState;
          return current.entries.length > 0 ? current : undefined;
        });
        const perEntry = seen.entries.reduce((sum, entry) => sum + entry.deadLetters.dead + entry.deadLetters.redrive, 0);
        assert.equal(seen.deadLetters.total, perEntry, `total ${seen.deadLetters.total} vs the entries' ${perEntry}`);
      }
    } finally {
      await dashboard.close();
      await real.close();
    }
  });
});

describe('dashboard server, methods and shutdown', () => {
  let world: World;
  let test: Awaited<ReturnType<typeof dashboardOn>>;
  let dashboard: RunningDashboard;
  before(async () => {
    world = await createWorld('sqlite');
    test = await dashboardOn(world, { allowActions: true });
    dashboard = test.dashboard;
  });
  after(async () => {
    await test?.close();
    await world?.stop();
  });

  it('a wrong method on a known path is 405 with the methods it takes; an unknown path stays 404', async () => {
    const headers = test.actionHeaders();
    const cases: Array<[method: string, path: string, status: number, allow: string | undefined]> = [
      ['POST', '/api/state', 405, 'GET, HEAD'],
      ['POST', '/api/live', 405, 'GET, HEAD'],
      ['POST', '/', 405, 'GET, HEAD'],
      ['GET', '/api/views/carts/rebuild', 405, 'POST'],
      ['GET', `/api/dead-letters/${world.letters.notifier}/retry`, 405, 'POST'],
      ['GET', '/api/dead-letters/redrive', 405, 'POST'],
      ['PUT', '/api/dead-letters/redrive', 405, 'POST'],
      ['PUT', '/api/state', 405, 'GET, HEAD'],
      ['POST', '/api/nope', 404, undefined],
      ['GET', '/api/nope', 404, undefined],
    ];
    for (const [method, path, status, allow] of cases) {
      const reply = await send(dashboard.port, path, { method, headers: method === 'GET' ? {} : headers, body: method === 'GET' ? undefined : {} });
      assert.equal(reply.status, status, `${method} ${path}: ${reply.body}`);
      assert.equal(reply.headers.allow, allow, `${method} ${path}`);
    }
    assert.equal(await world.deadLetters.count({ source: 'notifier' }), 1, 'nothing acted on');
  });

  it('a rebuild asked for once close() began is refused (503), not started on a database about to close', async () => {
    let started = 0;
    const rebuilds = new Rebuilds(
      [{ name: 'carts', rebuild: async () => (started += 1, { position: 0, events: 0, resumedFrom: 0, generation: 1, durationMs: 0 }) }],
      { scrub: (text) => text, onEnd: () => undefined },
    );
    await rebuilds.close();
    assert.throws(() => rebuilds.start('carts', false), (error: unknown) => error instanceof HttpError && error.status === 503);
    assert.equal(started, 0);
  });
});

describe('dashboard server, a view that cannot be counted', () => {
  let world: World;
  before(async () => {
    world = await createWorld('sqlite');
  });
  after(async () => {
    await world?.stop();
  });

  it("a view's row count that fails is an error of that sample, not a reason to drop the status just read", async () => {
    const real = await openOn(world);
    let failing = true;
    const viewTables = (view: string) => (failing ? Promise.reject(new Error('no such table: carts')) : real.admin.viewTables(view));
    const dashboard = await startDashboard({ database: steered(real, { viewTables }), port: 0, intervalMs: 20, logger: silentLogger });
    const client = await openLive(dashboard.port);
    try {
      const first = (await client.waitFor('state', (data) => (data as DashboardState).error !== null)) as DashboardState;
      assert.match(first.error ?? '', /counting the rows of view "carts": no such table/);
      assert.deepEqual(first.entries.map((entry) => entry.name), ['audit', 'carts', 'mailer', 'notifier', 'stopped-sub'], 'the status of the same sample');
      failing = false;
      const counted = (await client.waitFor('state', (data) => (data as DashboardState).entries.some((entry) => entry.viewTables !== null))) as DashboardState;
      assert.equal(counted.error, null);
      assert.deepEqual(counted.entries.find((entry) => entry.name === 'carts')?.viewTables?.map((table) => table.table), ['carts']);
    } finally {
      client.close();
      await dashboard.close();
      await real.close();
    }
  });
});

describe('dashboard server: allowed hosts', () => {
  let world: World;
  before(async () => {
    world = await createWorld('sqlite');
  });
  after(async () => {
    await world?.stop();
  });

  const status = async (port: number, host: string): Promise<number> => (await send(port, '/healthz', { headers: { host } })).status;

  it('on loopback, a proxy name passed on as Host is answered (any port when given without one), others still get 421', async () => {
    const db = await openOn(world);
    const dashboard = await startDashboard({ database: db, port: 0, allowedHosts: ['Ops.Example.com'], allowActions: true, logger: silentLogger });
    try {
      const { port } = dashboard;
      assert.deepEqual(
        [await status(port, 'ops.example.com'), await status(port, 'ops.example.com:443'), await status(port, `127.0.0.1:${port}`), await status(port, 'evil.example'), await status(port, 'ops.example.com.evil')],
        [200, 200, 200, 421, 421],
      );
      // An action through an HTTPS proxy of that name: its Origin is the page's own.
      const headers = {
        host: 'ops.example.com',
        origin: 'https://ops.example.com',
        authorization: `Bearer ${dashboard.token ?? ''}`,
        'content-type': 'application/json',
        'sec-fetch-site': 'same-origin',
      };
      const reply = await send(port, '/api/dead-letters/00000000-0000-0000-0000-000000000000/discard', { method: 'POST', body: {}, headers });
      assert.equal(reply.status, 404, `let through the guard, then found no such letter: ${reply.body}`);
    } finally {
      await dashboard.close();
      await db.close();
    }
  });

  it('bound beyond loopback: with allowed hosts the Host check applies (DNS rebinding), without them every Host is answered', async () => {
    const db = await openOn(world);
    const checked = await startDashboard({ database: db, host: '0.0.0.0', port: 0, allowedHosts: ['dash.internal'], logger: silentLogger });
    const open = await startDashboard({ database: db, host: '0.0.0.0', port: 0, logger: silentLogger });
    try {
      assert.deepEqual([await status(checked.port, `dash.internal:${checked.port}`), await status(checked.port, `evil.example:${checked.port}`)], [200, 421]);
      assert.equal(await status(open.port, `evil.example:${open.port}`), 200);
    } finally {
      await checked.close();
      await open.close();
      await db.close();
    }
  });

  it('an allowed host that a Host header never holds is refused at start', async () => {
    const db = await openOn(world);
    try {
      for (const name of ['https://ops.example.com', 'ops.example.com/path', 'two names', '']) {
        await assert.rejects(startDashboard({ database: db, port: 0, allowedHosts: [name], logger: silentLogger }), /not a host name as a browser sends it/, name);
      }
    } finally {
      await db.close();
    }
  });
});
