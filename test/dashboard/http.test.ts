// The dashboard's server over HTTP, on SQLite and PostgreSQL: the guard in front of every route
// (Host, read-only, token, JSON, same origin), the state it samples, the SSE stream, the dead-letter
// actions and their log, a view rebuild, no password in anything it sends, and `eskit dashboard`.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { CliDatabase } from '../../src/cli/database.js';
import { silentLogger } from '../../src/core/logger.js';
import { startDashboard } from '../../src/cli/dashboard/index.js';
import type { ActionLogEntry, DashboardState, EventView, LetterView } from '../../src/cli/dashboard/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { POSTGRES_URL } from '../support/postgres.js';
import { cli } from '../cli/helpers.js';
import type { Capture } from '../cli/helpers.js';
import { createWorld } from '../cli/world.js';
import type { ShopEvent, World } from '../cli/world.js';
import { Subscription } from '../../src/subscription/index.js';
import { dashboardOn, openLive, openOn, send } from './world.js';
import type { TestDashboard } from './world.js';

const CONFIG = fileURLToPath(new URL('../cli/fixtures/eskit.config.ts', import.meta.url));
const PASSWORD = 's3cretpw';

/** The test database's URL with a password in it (trust authentication accepts any). */
function withPassword(url: string): string {
  const parsed = new URL(url);
  parsed.password = PASSWORD;
  return parsed.toString();
}

const state = async (port: number): Promise<DashboardState> => {
  const reply = await send(port, '/api/state');
  assert.equal(reply.status, 200, reply.body);
  return reply.json as DashboardState;
};

for (const kind of ['sqlite', 'postgres'] as const) {
  describe(`dashboard server on ${kind}`, () => {
    let world: World;
    let live: TestDashboard;
    let readOnly: TestDashboard;
    /** Every body the tests received, to look for the password in. */
    const bodies: string[] = [];
    const post = async (path: string, body: unknown, headers?: Record<string, string>) => {
      const reply = await send(live.port, path, { method: 'POST', body, headers: headers ?? live.actionHeaders() });
      bodies.push(reply.body);
      return reply;
    };
    const get = async (path: string) => {
      const reply = await send(live.port, path);
      bodies.push(reply.body);
      return reply;
    };

    before(async () => {
      world = await createWorld(kind);
      const url = kind === 'postgres' ? withPassword(POSTGRES_URL) : undefined;
      live = await dashboardOn(world, { allowActions: true, url, config: CONFIG });
      readOnly = await dashboardOn(world, { url });
    });
    after(async () => {
      await readOnly?.close();
      await live?.close();
      await world?.stop();
    });

    it('serves the health check with the security headers and no CORS', async () => {
      const reply = await get('/healthz');
      assert.equal(reply.status, 200);
      assert.deepEqual(reply.json, { ok: true });
      assert.match(String(reply.headers['content-security-policy']), /default-src 'none'.*frame-ancestors 'none'/);
      assert.equal(reply.headers['x-content-type-options'], 'nosniff');
      assert.equal(reply.headers['cache-control'], 'no-store');
      assert.equal(reply.headers['x-frame-options'], 'DENY');
      assert.equal(reply.headers['referrer-policy'], 'no-referrer');
      assert.equal(reply.headers['access-control-allow-origin'], undefined);
      const page = await get('/');
      assert.equal(page.status, 200);
      assert.match(String(page.headers['content-type']), /^text\/html/);
      const head = await send(live.port, '/api/state', { method: 'HEAD' });
      assert.equal(head.status, 200);
      assert.equal(head.body, '');
      const missing = await get('/no-such-file.js');
      assert.equal(missing.status, 404);
      assert.equal(typeof (missing.json as { error: string }).error, 'string');
    });

    it('answers 421 to a forged Host (DNS rebinding), on reads and actions', async () => {
      for (const host of ['evil.example', `evil.example:${live.port}`, `127.0.0.1:${live.port + 1}`]) {
        const reply = await send(live.port, '/api/state', { headers: { host } });
        assert.equal(reply.status, 421, host);
        const action = await send(live.port, '/api/dead-letters/redrive', { method: 'POST', body: { source: 'notifier' }, headers: live.actionHeaders({ host }) });
        assert.equal(action.status, 421, host);
      }
      for (const host of [`localhost:${live.port}`, `127.0.0.1:${live.port}`, `[::1]:${live.port}`]) {
        assert.equal((await send(live.port, '/healthz', { headers: { host } })).status, 200, host);
      }
    });

    it('refuses every action when read-only, whatever the token', async () => {
      const reply = await send(readOnly.port, `/api/dead-letters/${world.letters.notifier}/retry`, {
        method: 'POST',
        body: {},
        headers: { ...readOnly.actionHeaders(), authorization: `Bearer ${live.dashboard.token ?? ''}` },
      });
      assert.equal(reply.status, 403);
      assert.match((reply.json as { error: string }).error, /read-only/);
      for (const method of ['PUT', 'DELETE', 'PATCH']) assert.equal((await send(readOnly.port, '/api/state', { method })).status, 403, method);
      const seen = await state(readOnly.port);
      assert.equal(seen.readOnly, true);
      assert.equal(readOnly.dashboard.token, undefined);
      assert.equal(seen.actionsLog, 4, 'refused attempts are logged too');
    });

    it('needs the token (401), a JSON body (415) and the same origin (403) for an action', async () => {
      const path = `/api/dead-letters/${world.letters.notifier}/discard`;
      const headers = live.actionHeaders();
      const missing = await post(path, {}, { ...headers, authorization: '' });
      assert.equal(missing.status, 401);
      const wrong = await post(path, {}, { ...headers, authorization: `Bearer ${'x'.repeat(43)}` });
      assert.equal(wrong.status, 401);
      const short = await post(path, {}, { ...headers, authorization: 'Bearer x' });
      assert.equal(short.status, 401);
      const text = await post(path, '{}', { ...headers, 'content-type': 'text/plain' });
      assert.equal(text.status, 415);
      const form = await post(path, 'a=1', { ...headers, 'content-type': 'application/x-www-form-urlencoded' });
      assert.equal(form.status, 415);
      const crossOrigin = await post(path, {}, { ...headers, origin: 'http://evil.example' });
      assert.equal(crossOrigin.status, 403);
      const noOrigin = await post(path, {}, Object.fromEntries(Object.entries(headers).filter(([name]) => name !== 'origin')));
      assert.equal(noOrigin.status, 403);
      const crossSite = await post(path, {}, { ...headers, 'sec-fetch-site': 'cross-site' });
      assert.equal(crossSite.status, 403);
      const otherScheme = await post(path, {}, { ...headers, origin: `https://evil.example:${live.port}` });
      assert.equal(otherScheme.status, 403);
      assert.equal(await world.deadLetters.count({ source: 'notifier' }), 1, 'nothing was discarded');
      const replies = [missing, wrong, short, text, form, crossOrigin, noOrigin, crossSite, otherScheme];
      for (const reply of replies) assert.ok(!reply.body.includes(live.dashboard.token ?? '-'), 'the token is never sent back');
      assert.equal(live.dashboard.token?.length, 43, '32 random bytes, base64url');
    });

    it('/api/state: head, lag, entries with rates and history, dead letters by source', async () => {
      const seen = await waitUntil(async () => {
        const current = await state(live.port);
        return current.entries.some((entry) => entry.name === 'carts' && entry.viewTables !== null) ? current : undefined;
      });
      assert.equal(seen.backend, kind);
      assert.equal(seen.head, 5);
      assert.equal(seen.readOnly, false);
      assert.equal(seen.intervalMs, 50);
      assert.equal(seen.error, null);
      assert.deepEqual(seen.rebuildable, ['carts']);
      assert.deepEqual(seen.entries.map((entry) => entry.name), ['audit', 'carts', 'mailer', 'notifier', 'stopped-sub']);
      const mailer = seen.entries.find((entry) => entry.name === 'mailer');
      assert.equal(mailer?.lag, 0);
      assert.equal(mailer?.state, 'leading');
      assert.equal(mailer?.rate, 0);
      assert.ok(Array.isArray(mailer?.history) && mailer.history.length > 0);
      const notifier = seen.entries.find((entry) => entry.name === 'notifier');
      assert.equal(notifier?.kind, 'automation');
      // Summed over its live nodes, as its status row last said (its row is rewritten on a heartbeat).
      assert.ok(notifier !== undefined && (notifier.work === null || Object.values(notifier.work).every((value) => value === null || typeof value === 'number')), JSON.stringify(notifier?.work));
      const carts = seen.entries.find((entry) => entry.name === 'carts');
      assert.deepEqual(carts?.viewTables?.map((table) => table.table), ['carts']);
      assert.equal(carts?.viewTables?.[0]?.rows, 2);
      assert.equal(mailer?.viewTables, null);
      assert.equal(seen.deadLetters.total, 4);
      assert.deepEqual(seen.deadLetters.bySource, [
        { source: 'mailer', dead: 1, redrive: 0 },
        { source: 'notifier', dead: 1, redrive: 0 },
        { source: 'stopped-sub', dead: 2, redrive: 0 },
      ]);
    });

    it('last handled: fresh while the checkpoint moves, though status rows are rewritten only on a heartbeat', async () => {
      const { position } = await world.store.append('cart-fresh', [{ type: 'ItemAdded', data: { sku: 'fresh' } }]);
      const moved = await waitUntil(async () => {
        const mailer = (await state(live.port)).entries.find((entry) => entry.name === 'mailer');
        return mailer !== undefined && mailer.position !== null && mailer.position >= position ? mailer : undefined;
      }, { message: 'the mailer to handle the new event' });
      assert.ok(moved.lastHandledAgeMs !== null && moved.lastHandledAgeMs < 500, `seen moving a moment ago: ${String(moved.lastHandledAgeMs)} ms`);
    });

    it('lists and shows dead letters with their events', async () => {
      const list = await get('/api/dead-letters?source=stopped-sub&limit=1');
      assert.equal(list.status, 200, list.body);
      const page = list.json as { letters: LetterView[]; total: number; next: string | null };
      assert.equal(page.total, 2);
      assert.equal(page.letters.length, 1);
      assert.equal(page.next, page.letters[0]?.id);
      const rest = (await get(`/api/dead-letters?source=stopped-sub&after=${page.next}`)).json as typeof page;
      assert.equal(rest.letters.length, 1);
      assert.equal(rest.next, null);
      const newest = (await get('/api/dead-letters?source=stopped-sub&order=newest')).json as typeof page;
      assert.deepEqual(newest.letters.map((letter) => letter.id), [rest.letters[0]?.id, page.letters[0]?.id], 'newest first');
      const newestPaged = (await get(`/api/dead-letters?source=stopped-sub&order=newest&limit=1&after=${newest.letters[0]?.id}`)).json as typeof page;
      assert.deepEqual(newestPaged.letters.map((letter) => letter.id), [page.letters[0]?.id], 'the page after, in that order');
      assert.equal((await get('/api/dead-letters?order=random')).status, 400);
      const one = await get(`/api/dead-letters/${world.letters.notifier}`);
      const shown = one.json as { letter: LetterView; event: EventView | null };
      assert.equal(shown.letter.stage, 'execute');
      assert.equal(typeof shown.letter.createdAt, 'string');
      assert.match(shown.letter.attempts[0]?.error ?? '', /smtp server down/);
      assert.equal(shown.event?.type, 'OrderPlaced');
      assert.equal(shown.event?.streamId, 'order-1');
      assert.equal((await get('/api/dead-letters/01900000-0000-7000-8000-000000000000')).status, 404);
      assert.equal((await get('/api/dead-letters?status=nope')).status, 400);
    });

    it('retry: refuses a handler-stage letter (409), marks an automation letter that then runs', async () => {
      const refused = await post(`/api/dead-letters/${world.letters.mailer}/retry`, {});
      assert.equal(refused.status, 409);
      assert.match((refused.json as { error: string }).error, /only automations run redrives/);
      world.notifier.failing = false;
      const reply = await post(`/api/dead-letters/${world.letters.notifier}/retry`, {});
      assert.equal(reply.status, 200, reply.body);
      const body = reply.json as { marked: number; note: string };
      assert.equal(body.marked, 1);
      assert.match(body.note, /notifier/);
      await waitUntil(() => world.notifier.executed.includes('order-1'), { timeoutMs: 10_000, message: 'the redrive to run' });
      await waitUntil(async () => (await state(live.port)).deadLetters.bySource.every((source) => source.source !== 'notifier'), { message: 'the letter to go' });
    });

    it('discard one, redrive a source (409 for handler letters unless force, 409 for a count that changed), discard all with the expected count', async () => {
      const [first, second] = world.letters.stopped;
      const discarded = await post(`/api/dead-letters/${first}/discard`, {});
      assert.equal(discarded.status, 200, discarded.body);
      assert.deepEqual(discarded.json, { removed: 1 });
      assert.equal((await post(`/api/dead-letters/${first}/discard`, {})).status, 404);

      const refused = await post('/api/dead-letters/redrive', { source: 'stopped-sub' });
      assert.equal(refused.status, 409);
      const changed = await post('/api/dead-letters/redrive', { source: 'stopped-sub', force: true, expected: 2 });
      assert.equal(changed.status, 409, 'the count confirmed is not the count there');
      assert.match((changed.json as { error: string }).error, /has 1 dead letter waiting, not 2/);
      assert.equal((await world.deadLetters.get(second as string))?.status, 'dead', 'nothing marked');
      const forced = await post('/api/dead-letters/redrive', { source: 'stopped-sub', force: true, expected: 1 });
      assert.equal(forced.status, 200, forced.body);
      assert.equal((forced.json as { marked: number }).marked, 1);
      assert.equal((await world.deadLetters.get(second as string))?.status, 'redrive');
      assert.equal((await post('/api/dead-letters/redrive', { source: 'no-such-thing' })).status, 404);

      const wrongCount = await post('/api/dead-letters/discard', { source: 'mailer', expected: 2 });
      assert.equal(wrongCount.status, 409);
      assert.equal(await world.deadLetters.count({ source: 'mailer' }), 1);
      assert.equal((await post('/api/dead-letters/discard', { source: 'mailer' })).status, 400);
      const all = await post('/api/dead-letters/discard', { source: 'mailer', expected: 1 });
      assert.deepEqual(all.json, { removed: 1 });
      assert.equal(await world.deadLetters.count({ source: 'mailer' }), 0);
    });

    it('logs every action with operator, address and outcome', async () => {
      const log = await openLive(live.port);
      try {
        const entries = (await log.waitFor('actions', (data) => Array.isArray(data) && data.length > 0)) as ActionLogEntry[];
        const retried = entries.find((entry) => entry.action === 'retry' && entry.outcome === 'ok');
        assert.ok(retried, JSON.stringify(entries));
        assert.equal(retried.target, world.letters.notifier);
        assert.equal(retried.who.operator, 'ada');
        assert.match(retried.who.address, /127\.0\.0\.1/);
        assert.ok(entries.some((entry) => entry.action === 'retry' && entry.outcome === 'refused' && entry.target === world.letters.mailer));
        assert.ok(entries.some((entry) => entry.outcome === 'refused' && /token/.test(entry.detail)));
        assert.ok(!JSON.stringify(entries).includes(live.dashboard.token ?? '-'));
        // Behind a TLS proxy that passes the Host on, the page's origin is https://<Host>.
        const proxied = await post('/api/dead-letters/redrive', { source: 'notifier' }, live.actionHeaders({ 'x-eskit-operator': 'grace', origin: `https://127.0.0.1:${live.port}` }));
        assert.equal(proxied.status, 200, proxied.body);
        const next = (await log.waitFor('actions', (data) => (data as ActionLogEntry[]).some((entry) => entry.who.operator === 'grace'))) as ActionLogEntry[];
        assert.equal(next.length, 1);
        assert.equal(next[0]?.action, 'redrive');
      } finally {
        log.close();
      }
    });

    it('SSE: a state and the log tail on connect, new events after an append', async () => {
      const client = await openLive(live.port);
      try {
        assert.equal(client.status, 200);
        assert.match(String(client.headers['content-type']), /^text\/event-stream/);
        const first = (await client.waitFor('state')) as DashboardState;
        assert.ok(first.head >= 5);
        const tail = (await client.waitFor('events', (data) => (data as EventView[]).length > 0)) as EventView[];
        assert.equal(tail[0]?.position, 1);
        assert.equal(typeof tail[0]?.recordedAt, 'string');
        const { position } = await world.store.append('cart-9', [{ type: 'ItemAdded', data: { sku: 'live' }, metadata: { correlationId: 'corr-live' } }]);
        const fresh = (await client.waitFor('events', (data) => (data as EventView[]).some((event) => event.position === position))) as EventView[];
        assert.equal(fresh.find((event) => event.position === position)?.streamId, 'cart-9');
        await client.waitFor('state', (data) => (data as DashboardState).head === position);
        const mailer = await waitUntil(async () => {
          const entry = (await state(live.port)).entries.find((candidate) => candidate.name === 'mailer');
          return entry?.lag === 0 && entry.position === position ? entry : undefined;
        });
        assert.ok(mailer.history.some((rate) => rate > 0), `the move to ${position} shows as a rate: ${JSON.stringify(mailer.history)}`);
      } finally {
        client.close();
        bodies.push(client.text);
      }
    });

    it('reads the log, a stream and searches by id', async () => {
      const events = (await get('/api/events?after=4&limit=2')).json as { events: EventView[]; head: number };
      assert.deepEqual(events.events.map((event) => event.position), [5, 6]);
      assert.ok(events.head >= 6);
      const stream = (await get('/api/streams/cart-1?from=2')).json as { streamId: string; version: number; archived: boolean; events: EventView[] };
      assert.equal(stream.version, 3);
      assert.equal(stream.archived, false);
      assert.deepEqual(stream.events.map((event) => event.streamVersion), [2, 3]);
      const id = stream.events[0]?.id as string;
      const found = (await get(`/api/search?id=${id}`)).json as { events: EventView[]; scanned: number; from: number };
      assert.deepEqual(found.events.map((event) => event.id), [id]);
      assert.ok(found.scanned >= 6);
      assert.equal(found.from, 1);
      const correlated = (await get('/api/search?correlation=corr-live')).json as { events: EventView[] };
      assert.deepEqual(correlated.events.map((event) => event.streamId), ['cart-9']);
      assert.equal(correlated.events[0]?.metadata.correlationId, 'corr-live');
      assert.equal((await get('/api/search')).status, 400);
      assert.equal((await get('/api/streams/no-such-stream')).status, 404);
    });

    it('rebuilds a view of the config with progress (404 unknown, 409 while running)', async () => {
      assert.equal((await post('/api/views/nope/rebuild', {})).status, 404);
      const reply = await post('/api/views/carts/rebuild', {});
      assert.equal(reply.status, 202, reply.body);
      assert.deepEqual(reply.json, { started: true });
      const done = await waitUntil(async () => (await state(live.port)).rebuilds.find((rebuild) => rebuild.view === 'carts' && rebuild.state !== 'running'), {
        timeoutMs: 10_000,
        message: 'the rebuild to end',
      });
      assert.equal(done.state, 'done', JSON.stringify(done));
      assert.equal(done.result?.generation, 1);
      assert.equal(done.done, done.total);
    });

    if (kind === 'postgres') {
      it('never sends the password of the connection string', async () => {
        const client = await openLive(live.port);
        await client.waitFor('state');
        client.close();
        const seen = await state(live.port);
        assert.match(seen.database, /\*\*\*/);
        const all = [...bodies, client.text, JSON.stringify(seen), (await get('/api/nope')).body, (await get('/')).body];
        for (const body of all) assert.ok(!body.includes(PASSWORD), `the password is in ${body.slice(0, 200)}`);
      });
    }

    it('eskit dashboard: prints the URL and the token, serves until the signal', async () => {
      const controller = new AbortController();
      let stdout: Capture | undefined;
      const running = cli(['dashboard', '--port', '0', '--allow-actions', '--interval', '100', ...world.db], {
        signal: controller.signal,
        onStart: (out) => (stdout = out),
      });
      try {
        const match = await waitUntil(() => /http:\/\/127\.0\.0\.1:(\d+)\/#token=([\w-]+)/.exec(stdout?.text ?? ''), { timeoutMs: 10_000, message: 'the URL' });
        assert.match(stdout?.text ?? '', /token: [\w-]{43}/i);
        const port = Number(match[1]);
        assert.equal((await send(port, '/healthz')).status, 200);
        const seen = await state(port);
        assert.equal(seen.readOnly, false);
      } finally {
        controller.abort();
      }
      const result = await running;
      assert.equal(result.code, 0, result.stderr);
    });
  });
}

describe('dashboard server, whatever the backend', () => {
  let world: World;
  before(async () => {
    world = await createWorld('sqlite');
  });
  after(async () => {
    await world?.stop();
  });

  it('keeps sampling through a database error and says so', async () => {
    let failing = false;
    const real = await openOn(world);
    const admin = new Proxy(real.admin, {
      get(target, name, receiver) {
        if (name === 'subscriptions') return () => (failing ? Promise.reject(new Error('database unreachable')) : target.subscriptions());
        const value = Reflect.get(target, name, receiver) as unknown;
        return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      },
    });
    const flaky: CliDatabase = { ...real, admin, close: () => real.close() };
    const dashboard = await startDashboard({ database: flaky, port: 0, intervalMs: 20, logger: silentLogger });
    try {
      await waitUntil(async () => (await state(dashboard.port)).entries.length > 0);
      failing = true;
      const broken = await waitUntil(async () => {
        const seen = await state(dashboard.port);
        return seen.error !== null ? seen : undefined;
      });
      assert.match(broken.error ?? '', /database unreachable/);
      assert.ok(broken.entries.length > 0, 'the last good sample stays');
      failing = false;
      await waitUntil(async () => (await state(dashboard.port)).error === null, { message: 'sampling to recover' });
    } finally {
      await dashboard.close();
      await real.close();
    }
  });

  it('a partitioned runner: one entry, each partition with its rate, the rate summed', async () => {
    const test = await dashboardOn(world);
    const lanes = new Subscription<ShopEvent>({ backend: world.eskit, name: 'lanes', partitions: 2, handler: () => undefined, logger: silentLogger, pollIntervalMs: 20, checkpointIntervalMs: 0 });
    try {
      await lanes.start();
      const head = await world.store.headPosition();
      await waitUntil(async () => (await state(test.port)).entries.find((entry) => entry.name === 'lanes')?.position === head, { timeoutMs: 10_000, message: 'the lanes to catch up' });
      for (let index = 0; index < 6; index++) await world.store.append(`lane-${index}`, [{ type: 'ItemAdded', data: { sku: String(index) } }]);
      const moved = await waitUntil(
        async () => {
          const entry = (await state(test.port)).entries.find((candidate) => candidate.name === 'lanes');
          return entry?.partitions && entry.history.some((rate) => rate > 0) && entry.lag === 0 ? entry : undefined;
        },
        { timeoutMs: 10_000, message: 'a rate through the partitions' },
      );
      assert.equal(moved.partitions?.count, 2);
      assert.deepEqual(moved.partitions?.entries.map((lane) => typeof lane.rate), ['number', 'number']);
    } finally {
      await lanes.stop();
      await test.close();
    }
  });

  it('close() ends live connections and the server promptly', async () => {
    const test = await dashboardOn(world);
    const client = await openLive(test.port);
    await client.waitFor('state');
    const started = performance.now();
    await test.dashboard.close();
    await client.ended;
    assert.ok(performance.now() - started < 2000, 'closed promptly');
    await assert.rejects(send(test.port, '/healthz'));
    await test.database.close();
  });

  it('eskit dashboard warns when bound beyond loopback and is read-only by default', async () => {
    const controller = new AbortController();
    let stdout: Capture | undefined;
    let stderr: Capture | undefined;
    const running = cli(['dashboard', '--port', '0', '--host', '0.0.0.0', ...world.db], {
      signal: controller.signal,
      onStart: (out, err) => {
        stdout = out;
        stderr = err;
      },
    });
    try {
      const match = await waitUntil(() => /http:\/\/[^\s:]+:(\d+)\//.exec(stdout?.text ?? ''), { timeoutMs: 10_000, message: 'the URL' });
      assert.match(stderr?.text ?? '', /reachable from other machines/);
      assert.doesNotMatch(stdout?.text ?? '', /token/i);
      const port = Number(match[1]);
      assert.equal((await send(port, '/healthz', { headers: { host: 'dashboard.internal:8080' } })).status, 200, 'no Host check off loopback');
      assert.equal((await state(port)).readOnly, true);
    } finally {
      controller.abort();
    }
    assert.equal((await running).code, 0);
  });

  it('eskit dashboard --help and eskit --help list it', async () => {
    const help = await cli(['dashboard', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /Usage: eskit dashboard/);
    assert.match(help.stdout, /--allow-actions/);
    assert.match((await cli(['--help'])).stdout, /\n {2}dashboard\s+/);
  });
});
