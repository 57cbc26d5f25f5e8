// The dashboard in a real browser (issue 21): Debian's chromium, driven by playwright-core, on a
// dashboard over a real PostgreSQL schema where two worker processes (fixtures/shop-node.ts) run the
// same subscription and automation under leader election. It checks what a person would see: the lag
// moving when events arrive, a dead letter appearing and going away once retried from the page (and
// its side effect then run), the standby that is denied, the leader changing when the leader process
// is killed (and the killed one shown as a node that "was leader", with no heartbeat), a runner without
// leader election in `eskit status`'s words, a token link opened in a tab already open, a read-only
// dashboard without action buttons that refuses a POST, and hostile text shown as text. It waits on the page and the processes, never on sleeps. A screenshot of the main page goes
// to artifacts/dashboard.png. Without chromium it fails under CI=true and is skipped elsewhere.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import type { Browser, ConsoleMessage, Page } from 'playwright-core';
import { openDashboard } from '../../src/cli/dashboard/open.js';
import type { RunningDashboard } from '../../src/cli/dashboard/index.js';
import { silentLogger } from '../../src/core/logger.js';
import { postgres } from '../../src/postgres/index.js';
import { Subscription } from '../../src/subscription/index.js';
import type { EventShape } from '../../src/core/event.js';
import type { PostgresBackend } from '../../src/postgres/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { createTestSchema } from '../support/postgres.js';
import type { TestSchema } from '../support/postgres.js';
import { ChildNode, fixturePath, killAll } from '../support/processes.js';
import { MAILER, PROJECTION, shopTables } from './fixtures/shop-protocol.js';
import type { ShopLine, ShopNodeConfig } from './fixtures/shop-protocol.js';

// The few browser globals the functions run in the page use (the tsconfig has no DOM library).
declare const document: {
  querySelector(selector: string): { textContent: string | null; getAttribute(name: string): string | null } | null;
  body: { innerText: string };
};
declare const sessionStorage: { getItem(key: string): string | null; setItem(key: string, value: string): void };
declare const window: { __pwned?: unknown; __sameDocument?: boolean };
declare const history: { replaceState(data: unknown, unused: string, url: string): void };

const CHROMIUM = ['/usr/bin/chromium', '/usr/lib/chromium/chromium'].find((path) => existsSync(path));
const NO_CHROMIUM = 'no chromium at /usr/bin/chromium or /usr/lib/chromium/chromium (apt-get install chromium; .ci/run installs it)';
const skip = CHROMIUM === undefined && process.env.CI !== 'true' ? `${NO_CHROMIUM}; skipped outside CI` : false;
const SCREENSHOT = fileURLToPath(new URL('../../artifacts/dashboard.png', import.meta.url));

/** A runner of the test process without leader election: `eskit status` says "no election". */
const AUDIT = 'audit-log';

/** The one bad address: no mailbox until the test creates it; markup in it must stay text. */
const BAD_EMAIL = '<img src=x onerror="window.__pwned=3">@nowhere';
const HOSTILE_NOTE = '<img src=x onerror="window.__pwned=1">';
const HOSTILE_STREAM = 'order-<b>4</b>';
const HOSTILE_CORRELATION = '<script>window.__pwned=2</script>';

describe('the dashboard in a real browser', { skip }, () => {
  let schema: TestSchema;
  let writer: PostgresBackend;
  let audit: Subscription<EventShape> | undefined;
  let nodes: ChildNode<ShopLine>[] = [];
  let nodeA: ChildNode<ShopLine>;
  let nodeB: ChildNode<ShopLine>;
  let live: RunningDashboard;
  let readOnly: RunningDashboard;
  let launching: Promise<Browser> | undefined;
  let browser: Browser;
  let page: Page;
  const problems: string[] = [];
  const t = (): string => `"${schema.name}"`;

  async function order(streamId: string, data: Record<string, unknown>, metadata: Record<string, unknown> = {}): Promise<void> {
    await writer.store.append(streamId, [{ type: 'OrderPlaced', data, metadata }]);
  }

  const rowSelector = (runner: string): string => `[data-testid="runner-row"][data-name="${runner}"]`;

  /** Waits until the runner's cell `field` reads `expected` on `on`. */
  async function cellReads(on: Page, runner: string, field: string, expected: string): Promise<void> {
    const selector = `${rowSelector(runner)} [data-field="${field}"]`;
    try {
      await on.waitForFunction(([s, text]) => document.querySelector(s)?.textContent === text, [selector, expected] as const);
    } catch (error) {
      const shown = await on.locator(selector).textContent().catch(() => null);
      throw new Error(`${runner} ${field}: waited for "${expected}", the page shows ${JSON.stringify(shown)}`, { cause: error });
    }
  }

  before(async () => {
    if (CHROMIUM === undefined) throw new Error(`${NO_CHROMIUM}. Under CI=true the browser tests fail without it.`);
    // The browser starts while the workers load.
    launching = chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    });
    launching.catch(() => undefined);
    schema = await createTestSchema({ create: false });
    writer = postgres({ pool: schema.pool, schema: schema.name, leaderElection: false });
    await writer.migrate();
    await schema.pool.query(shopTables(schema.name));
    for (const n of [1, 2, 3]) await order(`order-${n}`, { email: `buyer${n}@example.com` }, { correlationId: `checkout-${n}` });
    await order(HOSTILE_STREAM, { email: 'eve@example.com', note: HOSTILE_NOTE }, { correlationId: HOSTILE_CORRELATION });

    // Both workers load at once; node-b starts its runners once node-a leads both, so node-a leads.
    const script = fixturePath('./fixtures/shop-node.ts', import.meta.url);
    const config = (node: string, holdUntilGo: boolean): string =>
      JSON.stringify({ node, connectionString: schema.connectionString, schema: schema.name, lockPollMs: 100, holdUntilGo } satisfies ShopNodeConfig);
    nodeA = new ChildNode<ShopLine>('node-a', script, [config('node-a', false)]);
    nodeB = new ChildNode<ShopLine>('node-b', script, [config('node-b', true)]);
    nodes = [nodeA, nodeB];
    for (const runner of [PROJECTION, MAILER]) await nodeA.waitFor((l) => l.ev === 'leading' && l.runner === runner, `node-a leading ${runner}`, { timeoutMs: 15_000 });
    nodeB.send('go\n');
    for (const runner of [PROJECTION, MAILER]) await nodeB.waitFor((l) => l.ev === 'standby' && l.runner === runner, `node-b standing by for ${runner}`, { timeoutMs: 15_000 });

    audit = new Subscription<EventShape>({ backend: writer, name: AUDIT, handler: () => undefined, logger: silentLogger, pollIntervalMs: 50, statusHeartbeatMs: 250 });
    await audit.start();

    const common = { db: schema.connectionString, schema: schema.name, port: 0, intervalMs: 200 };
    live = await openDashboard({ ...common, allowActions: true });
    readOnly = await openDashboard({ ...common, allowActions: false });

    browser = await launching;
    console.log(`chromium ${browser.version()} (${CHROMIUM}), playwright-core driving it`);
    page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    page.setDefaultTimeout(10_000);
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
    // A CSP violation or a failed request shows here; the page should cause none.
    page.on('console', (message: ConsoleMessage) => {
      if (message.type() !== 'error') return;
      const url = message.location().url;
      // The one expected: an open letter's refresh answers 404 once its retry removed it.
      if (/404/.test(message.text()) && url.includes('/api/dead-letters/')) return;
      problems.push(`console: ${message.text()} (${url})`);
    });
    page.on('dialog', (dialog) => void dialog.accept());
  });

  after(async () => {
    await (await launching?.catch(() => undefined))?.close();
    await live?.close();
    await readOnly?.close();
    await killAll(nodes);
    await audit?.stop();
    await writer?.close();
    await schema?.drop();
  });

  test('the token moves from the URL into the session (a new link in the open tab too), and the lag cell changes when events arrive', async () => {
    assert.ok(live.token);
    // A token of an earlier run first; then the new link, opened in the same tab (only the fragment changes: no reload).
    await page.goto(`${live.url}#token=an-earlier-runs-token-0123456789`);
    await page.getByTestId('actions-badge').waitFor();
    assert.equal(new URL(page.url()).hash, '', 'the token is taken out of the address bar');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('eskit-dashboard-token')), 'an-earlier-runs-token-0123456789');
    await page.evaluate(() => (window.__sameDocument = true));
    await page.goto(`${live.url}#token=${encodeURIComponent(live.token)}`);
    await page.waitForFunction((token) => sessionStorage.getItem('eskit-dashboard-token') === token, live.token);
    assert.equal(await page.evaluate(() => window.__sameDocument), true, 'the same page, not reloaded');
    assert.equal(new URL(page.url()).hash, '', 'the new token is taken out of the address bar');
    assert.equal(await page.getByTestId('token-input').inputValue(), live.token);
    await page.waitForFunction(() => document.querySelector('[data-testid="live"]')?.getAttribute('data-status') === 'connected');

    await cellReads(page, PROJECTION, 'leader', 'node-a');
    await cellReads(page, PROJECTION, 'nodes', ' +1 standby');
    await cellReads(page, PROJECTION, 'lag', '0');
    const before = await writer.store.headPosition();
    // The projection's handler waits while 'hold' is there: the events arrive, the checkpoint stays.
    await schema.pool.query(`INSERT INTO ${t()}.control (key) VALUES ('hold')`);
    for (const n of [10, 11, 12, 13, 14]) await order(`order-${n}`, { email: `buyer${n}@example.com` });
    const head = await writer.store.headPosition();
    await cellReads(page, PROJECTION, 'lag', String(head - before));
    await cellReads(page, PROJECTION, 'head', String(head));
    await schema.pool.query(`DELETE FROM ${t()}.control WHERE key = 'hold'`);
    await cellReads(page, PROJECTION, 'lag', '0');
    await cellReads(page, PROJECTION, 'position', String(head));
  });

  test('a side effect that keeps failing shows up as a dead letter: its payload and every attempt’s error', async () => {
    await order('order-bad', { email: BAD_EMAIL });
    const row = page.locator('[data-testid="letter-row"][data-source="mailer"]');
    await row.waitFor();
    await cellReads(page, MAILER, 'dead', '1');
    await row.locator('[data-action="open"]').click();
    const detail = page.getByTestId('letter-detail');
    const attempts = detail.locator('[data-testid="letter-attempts"] li');
    await attempts.nth(1).waitFor();
    assert.equal(await attempts.count(), 2);
    assert.match((await attempts.nth(0).textContent()) ?? '', /no mailbox <img src=x onerror="window.__pwned=3">@nowhere/);
    assert.match((await detail.locator('pre.json').first().textContent()) ?? '', /"email": "<img src=x onerror=\\"window.__pwned=3\\">@nowhere"/);
    assert.equal(await row.locator('[data-action="retry"]').count(), 1, 'actions allowed: the row has a Retry button');
  });

  test('hostile text from events and letters is shown as text, never run', async () => {
    const hostile = page.locator('[data-testid="event-row"]', { hasText: HOSTILE_STREAM });
    await hostile.waitFor();
    assert.ok(((await hostile.locator('[data-field="data"]').textContent()) ?? '').includes('<img src=x onerror=\\"window.__pwned=1\\">'));
    await hostile.locator('[data-action="stream"]').click();
    const viewer = page.getByTestId('event-viewer');
    await viewer.locator(`[data-testid="event"]`).waitFor();
    assert.equal(await viewer.locator('h3').textContent(), `Stream ${HOSTILE_STREAM}`);
    await viewer.locator('[data-action="correlation"]').first().click();
    await page.waitForFunction(() => document.querySelector('[data-testid="event-viewer"]')?.getAttribute('data-view') === 'search');
    await viewer.locator('[data-testid="event"]').waitFor();
    assert.ok(((await viewer.textContent()) ?? '').includes(HOSTILE_CORRELATION));
    // Nothing of it became markup, and nothing ran.
    assert.equal(await page.locator('img').count(), 0);
    assert.equal(await page.locator('main b').count(), 0);
    assert.equal(await page.locator('script').count(), 1, 'only app.js');
    assert.equal(await page.evaluate(() => window.__pwned), undefined);
    await viewer.locator('[data-action="close"]').click();
  });

  test('a runner without leader election reads as `eskit status` says it: "no election", token "-"; times are 24-hour', async () => {
    await cellReads(page, AUDIT, 'state', 'no election');
    await cellReads(page, AUDIT, 'token', '-');
    await cellReads(page, AUDIT, 'nodes', '1 live node');
    // Its name opens it as the ▸ does.
    await page.locator(`${rowSelector(AUDIT)} [data-field="name"] span`).click();
    await page.locator(`[data-testid="runner-detail"][data-name="${AUDIT}"] [data-testid="node-row"] [data-field="role"]`, { hasText: 'no election' }).waitFor();
    const text = await page.evaluate(() => document.body.innerText);
    assert.doesNotMatch(text, /unelected/i);
    assert.doesNotMatch(text, /\b(AM|PM)\b/, 'no 12-hour times');
    const recorded = (await page.locator('[data-testid="event-row"] td.time').first().textContent()) ?? '';
    assert.match(recorded, /^(?:[A-Z][a-z]{2} \d{1,2}(?: \d{4})? )?\d{2}:\d{2}:\d{2}$/);
    await page.locator(`${rowSelector(AUDIT)} [data-action="expand"]`).click();
  });

  test('a row opens to its nodes, the standby that is denied too (screenshot)', async () => {
    await page.locator(`${rowSelector(PROJECTION)} [data-action="expand"]`).click();
    const detail = page.locator(`[data-testid="runner-detail"][data-name="${PROJECTION}"]`);
    await detail.locator('[data-testid="node-row"][data-node="node-b"] [data-field="role"]', { hasText: 'denied standby' }).waitFor();
    await detail.locator('[data-testid="node-row"][data-node="node-a"] [data-field="role"]', { hasText: 'leader' }).waitFor();
    mkdirSync(dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    console.log(`dashboard screenshot: ${SCREENSHOT}`);
  });

  test('a read-only dashboard shows no action buttons and refuses a POST with 403', async () => {
    const other = await browser.newPage();
    try {
      await other.goto(readOnly.url);
      await other.getByTestId('readonly-badge').waitFor();
      const letter = other.locator('[data-testid="letter-row"][data-source="mailer"]');
      await letter.waitFor();
      await cellReads(other, PROJECTION, 'leader', 'node-a');
      const actions = '[data-action="retry"], [data-action="discard"], [data-action="redrive-all"], [data-action="discard-all"], [data-action="rebuild"]';
      assert.equal(await other.locator(actions).count(), 0, 'no action button anywhere');
      assert.equal(await other.getByTestId('credentials').isVisible(), false, 'no token field');
      const id = await letter.getAttribute('data-id');
      // Even with the other dashboard's token, from the page itself (same origin).
      const refused = await other.evaluate(
        async ([letterId, token]) => {
          const res = await fetch(`api/dead-letters/${encodeURIComponent(letterId)}/retry`, {
            method: 'POST',
            headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
            body: '{}',
          });
          return { status: res.status, body: (await res.json()) as { error?: string } };
        },
        [id ?? '', live.token ?? ''] as const,
      );
      assert.equal(refused.status, 403);
      assert.match(refused.body.error ?? '', /read-only/);
      assert.equal(await writer.deadLetters.count({ source: MAILER, status: 'dead' }), 1, 'the letter is still dead');
    } finally {
      await other.close();
    }
  });

  test('Retry on the page: a retry that fails again says so; one that works makes the letter disappear and its side effect run', async () => {
    const row = page.locator('[data-testid="letter-row"][data-source="mailer"]');
    const id = (await row.getAttribute('data-id')) ?? '';
    await page.getByTestId('operator-input').fill('ada');
    await page.getByTestId('operator-input').dispatchEvent('change');
    // No mailbox yet: the page follows the letter until it is dead again, one attempt more.
    await row.locator('[data-action="retry"]').click();
    const notice = page.getByTestId('notice');
    await notice.filter({ hasText: `Retry of ${id} failed again (attempt ` }).waitFor();
    assert.match((await notice.textContent()) ?? '', /\(attempt [3-9]\): .*no mailbox/);
    assert.equal(await notice.getAttribute('data-kind'), 'error');

    await schema.pool.query(`INSERT INTO ${t()}.mailboxes (email) VALUES ($1)`, [BAD_EMAIL]);
    // A link with the token that came while the page showed: taken before the action, without a hashchange.
    await page.evaluate((token) => {
      sessionStorage.setItem('eskit-dashboard-token', 'an-earlier-runs-token-0123456789');
      history.replaceState(null, '', `#token=${token}`);
    }, live.token ?? '');
    await row.locator('[data-action="retry"]').click();
    await row.waitFor({ state: 'detached' });
    await notice.filter({ hasText: 'Retried: the letter is gone (its redrive succeeded).' }).waitFor();
    assert.equal(new URL(page.url()).hash, '');
    await cellReads(page, MAILER, 'dead', '0');
    await page.locator('[data-testid="letter-detail"][data-status="gone"]').waitFor();
    const sent = await waitUntil(
      async () => (await schema.pool.query<{ email: string }>(`SELECT email FROM ${t()}.sent WHERE stream_id = 'order-bad'`)).rows[0],
      { timeoutMs: 5000, message: 'the retried mail sent' },
    );
    assert.equal(sent.email, BAD_EMAIL);
    const logged = page.locator('[data-testid="action-row"][data-outcome="ok"]', { hasText: 'ada' });
    await logged.first().waitFor();
  });

  test('the leader shown changes when the leader process is killed', async () => {
    await cellReads(page, PROJECTION, 'leader', 'node-a');
    const tokenBefore = Number(await page.locator(`${rowSelector(PROJECTION)} [data-field="token"]`).textContent());
    const killedAt = Date.now();
    nodeA.kill('SIGKILL');
    await cellReads(page, PROJECTION, 'leader', 'node-b');
    await cellReads(page, MAILER, 'leader', 'node-b');
    const shownAfterMs = Date.now() - killedAt;
    console.log(`new leader shown on the page ${shownAfterMs} ms after the SIGKILL`);
    // The new leader claims the checkpoint with a higher fencing token.
    await page.waitForFunction(([s, before]) => Number(document.querySelector(s)?.textContent) > before, [`${rowSelector(PROJECTION)} [data-field="token"]`, tokenBefore] as const);
    const detail = page.locator(`[data-testid="runner-detail"][data-name="${PROJECTION}"]`);
    await detail.locator('[data-testid="node-row"][data-node="node-b"] [data-field="role"]', { hasText: 'leader' }).waitFor();
    // The killed leader does not look like one: it "was leader", and has no heartbeat.
    const killed = detail.locator('[data-testid="node-row"][data-node="node-a"][data-stale="true"]');
    await killed.waitFor();
    assert.equal(await killed.locator('[data-field="role"]').textContent(), 'was leader');
    assert.match((await killed.locator('[data-field="node-state"]').textContent()) ?? '', /^no heartbeat for \d/);
    await cellReads(page, PROJECTION, 'nodes', '');
    assert.ok(shownAfterMs < 5000, `failover shown after ${shownAfterMs} ms`);
    assert.deepEqual(problems, [], 'no page errors, CSP violations or failed requests');
  });
});
