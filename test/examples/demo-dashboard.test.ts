// `npm start -- --dashboard`: the demo keeps running with eskit's dashboard open on it. Started as a
// real process (--port 0), on SQLite and on PostgreSQL, it prints the dashboard's URL with the token;
// the page's state names the view and the mailer with their leader; Ctrl-C (SIGINT) stops the workers
// and the dashboard and exits 0 at once.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcessByStdio } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { after, describe, it } from 'node:test';
import type { DashboardState } from '../../src/cli/dashboard/types.js';
import { createTestSchema, POSTGRES_URL } from '../support/postgres.js';
import { runDemo } from './run-demo.js';

const dirs: string[] = [];
const tempDir = (): string => {
  const dir = mkdtempSync(join(tmpdir(), 'eskit-demo-dashboard-'));
  dirs.push(dir);
  return dir;
};
after(() => dirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

interface Running {
  child: ChildProcessByStdio<null, Readable, Readable>;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startDemo(args: readonly string[], env: Record<string, string>): Running {
  const child = spawn(process.execPath, ['--import', 'tsx', 'examples/demo.ts', ...args], {
    env: { ...process.env, DATABASE_URL: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return { child, output: () => output, exited };
}

/** Resolves with `check()`'s value once it is not undefined (checked every 50 ms); fails on timeout or when the demo exits. */
async function waitFor<T>(what: string, demo: Running, check: () => Promise<T | undefined> | T | undefined, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let exited = false;
  void demo.exited.then(() => (exited = true));
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (exited) assert.fail(`the demo exited while waiting for ${what}:\n${demo.output()}`);
    if (Date.now() > deadline) assert.fail(`no ${what} within ${timeoutMs} ms:\n${demo.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** The workers' pids, from the node ids of their status rows (worker-<n>/<pid>): two by default. */
const workersOf = (state: DashboardState): number[] => [...new Set(state.entries.flatMap((entry) => entry.nodes.map((node) => Number(node.nodeId.split('/')[1]))))];

/**
 * Starts `--dashboard --port 0`, waits for the URL line and for the view and the mailer to be led on
 * the page, then Ctrl-C: exit 0, promptly, every worker gone, the dashboard closed.
 */
async function runAndStop(env: Record<string, string>, backend: 'sqlite' | 'postgres'): Promise<void> {
  const started = performance.now();
  const demo = startDemo(['--dashboard', '--port', '0'], env);
  try {
    // The URL line, and the lines after it, up to the last one.
    const [, base = '', token = ''] = await waitFor(
      'URL line',
      demo,
      () => /Dashboard\s+(http:\/\/127\.0\.0\.1:\d+\/)#token=([\w-]+)\n[\s\S]*Ctrl-C stops everything/.exec(demo.output()) ?? undefined,
      15_000,
    );
    assert.ok(token.length >= 16, 'the link carries the actions token');
    // What a newcomer is told to watch.
    assert.match(demo.output(), /Events flowing/);
    assert.match(demo.output(), /leader hand-over/);
    assert.match(demo.output(), /dead letter/);

    const state = await waitFor(
      'view and mailer with a leader in /api/state',
      demo,
      async () => {
        const response = await fetch(`${base}api/state`);
        assert.equal(response.status, 200);
        const body = (await response.json()) as DashboardState;
        const view = body.entries.find((entry) => entry.name === 'sales');
        const mailer = body.entries.find((entry) => entry.name === 'confirmation-mailer');
        const led = (entry: typeof view): boolean => entry?.state === 'leading' && /^worker-\d+\/\d+$/.test(entry.leader?.holder ?? '');
        // And both workers' status rows (the standby writes its row once it found the lock taken).
        return led(view) && led(mailer) && workersOf(body).length === 2 ? body : undefined;
      },
      15_000,
    );
    assert.equal(state.backend, backend);
    assert.equal(state.readOnly, false, 'the demo allows actions');
    assert.equal(state.entries.find((entry) => entry.name === 'sales')?.kind, 'view');
    assert.equal(state.entries.find((entry) => entry.name === 'confirmation-mailer')?.kind, 'automation');
    assert.ok(!JSON.stringify(state).includes(token), 'the token is not in the state');
    const pids = workersOf(state);

    const stopAt = performance.now();
    demo.child.kill('SIGINT');
    const { code, signal } = await demo.exited;
    assert.equal(code, 0, `exit ${String(code)} ${String(signal)}:\n${demo.output()}`);
    assert.ok(performance.now() - stopAt < 10_000, `stopping took ${performance.now() - stopAt} ms`);
    assert.match(demo.output(), /Stopped: \d+ orders placed/);
    assert.deepEqual(pids.filter(isAlive), [], 'every worker stopped');
    await assert.rejects(fetch(`${base}healthz`), 'the dashboard is closed');
    assert.ok(performance.now() - started < 20_000, `the whole run took ${performance.now() - started} ms`);
  } finally {
    demo.child.kill('SIGKILL');
  }
}

describe('the demo with --dashboard', () => {
  it('prints the dashboard URL with a token, shows the view and the mailer with their leader, and stops cleanly on Ctrl-C', { timeout: 30_000 }, async () => {
    await runAndStop({ ESKIT_DEMO_DIR: tempDir() }, 'sqlite');
  });

  it('does the same on PostgreSQL (DATABASE_URL), in the demo\'s schema', { timeout: 30_000 }, async () => {
    const schema = await createTestSchema({ create: false, prefix: 'eskit_demo_t' });
    try {
      await runAndStop({ DATABASE_URL: POSTGRES_URL, ESKIT_DEMO_SCHEMA: schema.name }, 'postgres');
      // A statement a worker sent just before it exited may still run on the server: wait for it, so
      // that the drop does not deadlock with it.
      const running = async (): Promise<number> =>
        Number(
          (
            await schema.pool.query<{ n: string }>("SELECT count(*) AS n FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND state <> 'idle' AND query LIKE $1", [
              `%${schema.name}%`,
            ])
          ).rows[0]?.n,
        );
      const deadline = Date.now() + 10_000;
      while ((await running()) > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    } finally {
      await schema.drop();
    }
  });

  it('stops cleanly on a Ctrl-C while its workers start (exit 0)', { timeout: 30_000 }, async () => {
    const demo = startDemo(['--dashboard', '--port', '0'], { ESKIT_DEMO_DIR: tempDir() });
    try {
      await waitFor('first line', demo, () => (/with the dashboard, on SQLite/.test(demo.output()) ? true : undefined), 15_000);
      demo.child.kill('SIGINT');
      const { code, signal } = await demo.exited;
      assert.equal(code, 0, `exit ${String(code)} ${String(signal)}:\n${demo.output()}`);
      assert.match(demo.output(), /Stopped: 0 orders placed/);
    } finally {
      demo.child.kill('SIGKILL');
    }
  });

  it('says when the port is taken, before starting any worker (exit 2)', { timeout: 30_000 }, async () => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const port = (server.address() as AddressInfo).port;
      const run = await runDemo(['--dashboard', '--port', String(port)], { ESKIT_DEMO_DIR: tempDir() }, 'node', 25_000);
      assert.equal(run.code, 2, `${run.stdout}\n${run.stderr}`);
      assert.match(run.stderr, new RegExp(`Port ${port} is in use .*--port 0`));
      assert.doesNotMatch(run.stdout, /worker \d+ leads/);
    } finally {
      server.close();
    }
  });

  it('refuses options that do not go with it, and --port without it (exit 2)', async () => {
    const dir = tempDir();
    const orders = await runDemo(['--dashboard', '--orders', '100'], { ESKIT_DEMO_DIR: dir });
    assert.equal(orders.code, 2, orders.stderr);
    assert.match(orders.stderr, /--orders does not go with --dashboard/);
    const json = await runDemo(['--dashboard', '--json'], { ESKIT_DEMO_DIR: dir });
    assert.equal(json.code, 2, json.stderr);
    assert.match(json.stderr, /--json does not go with --dashboard/);
    const port = await runDemo(['--dashboard', '--port', '70000'], { ESKIT_DEMO_DIR: dir });
    assert.equal(port.code, 2, port.stderr);
    assert.match(port.stderr, /--port must be a whole number from 0 to 65535/);
    const alone = await runDemo(['--port', '4301'], { ESKIT_DEMO_DIR: dir });
    assert.equal(alone.code, 2, alone.stderr);
    assert.match(alone.stderr, /--port is the dashboard's: use it with --dashboard/);
  });
});
