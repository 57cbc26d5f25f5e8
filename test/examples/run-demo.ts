// Runs the real demo as a child process and parses the JSON summary it prints last (`--json`).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';

export interface DemoResult {
  ok: boolean;
  backend: 'sqlite' | 'postgres';
  workers: number;
  seconds: number;
  orders: { placed: number; bought: number; refunded: number; soldOut: number };
  events: number;
  view: Record<string, { sold: number; orders: number }>;
  mails: { sent: number; duplicates: number; missing: number; retried: number };
  deadLetters: number;
  undeliverableOrders: number;
  readYourWrites: { checked: number; invisible: number };
  leads: Array<{ name: string; worker: number; token: number; from: number; to: number | null; how: string }>;
  handoffs: Array<{ name: string; from: number; to: number; token: number; gapMs: number }>;
  /**
   * `--partitions N`: in one process `{ count }`; with workers, the partitions each worker led before
   * and after the stop (by worker number) and the moves between.
   */
  partitions: {
    count: number;
    stopped?: number;
    before?: Record<string, number[]>;
    after?: Record<string, number[]>;
    moved?: Array<{ partition: number; from: number; to: number; token: number; gapMs: number }>;
  } | null;
  checks: Array<{ name: string; ok: boolean; detail: string }>;
}

export interface DemoRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Wall-clock time of the whole process, start-up included. */
  ms: number;
}

/** `via: 'node'` runs `node --import tsx examples/demo.ts`; `'npm'` runs `npm start --` (the tsx CLI). */
export function runDemo(args: readonly string[], env: Record<string, string>, via: 'node' | 'npm' = 'node', timeoutMs = 120_000): Promise<DemoRun> {
  const [command, prefix] =
    via === 'node' ? [process.execPath, ['--import', 'tsx', 'examples/demo.ts']] : ['npm', ['start', '--silent', '--']];
  const started = performance.now();
  // DATABASE_URL='' means SQLite, whatever the environment running the tests says.
  const child = spawn(command, [...prefix, ...args], { env: { ...process.env, DATABASE_URL: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the demo still ran after ${timeoutMs} ms\nstdout:\n${stdout}\nstderr:\n${stderr}`));
    }, timeoutMs);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: performance.now() - started });
    });
  });
}

/** Asserts a clean exit and returns the JSON summary (the last line of stdout). */
export function resultOf(run: DemoRun): DemoResult {
  const output = `exit ${String(run.code)} ${String(run.signal)}\nstdout:\n${run.stdout}\nstderr:\n${run.stderr}`;
  assert.equal(run.code, 0, `the demo failed:\n${output}`);
  const last = run.stdout.trim().split('\n').at(-1) ?? '';
  let result: DemoResult;
  try {
    result = JSON.parse(last) as DemoResult;
  } catch {
    assert.fail(`the last line is not the JSON summary:\n${output}`);
  }
  assert.equal(result.ok, true, output);
  for (const check of result.checks) assert.ok(check.ok, `${check.name}: ${check.detail}`);
  return result;
}

/** What every run must show, whatever the backend: the numbers add up and the failures are visible. */
export function assertSound(result: DemoResult): void {
  const { orders, mails } = result;
  assert.equal(orders.placed, 400);
  assert.equal(orders.bought + orders.soldOut, orders.placed);
  assert.ok(orders.soldOut > 0, 'the concerts sell out');
  assert.ok(orders.refunded > 0, 'some orders are refunded');
  assert.equal(result.events, orders.bought + orders.refunded);
  // Every bought order got exactly one mail, except the dead-lettered ones.
  assert.ok(result.deadLetters > 0, 'the invalid address is dead-lettered');
  assert.equal(result.deadLetters, result.undeliverableOrders);
  assert.equal(mails.sent + result.deadLetters, orders.bought);
  assert.equal(mails.duplicates, 0);
  assert.equal(mails.missing, 0);
  assert.ok(mails.retried > 0, 'the fake mail server was busy now and then, and the automation retried');
  assert.ok(result.readYourWrites.checked > 0);
  assert.equal(result.readYourWrites.invisible, 0);
}

/**
 * Leadership as the workers reported it: per subscription, leads in token order never overlap, and
 * (`mailerHandoff`) the mailer changed hands at least once; partitioned, the view did.
 */
export function assertOneLeaderAtATime(result: DemoResult, subscriptions: readonly string[], mailerHandoff = true): void {
  for (const name of subscriptions) {
    const leads = result.leads.filter((l) => l.name === name).sort((a, b) => a.token - b.token);
    assert.ok(leads.length >= 1, `${name} had a leader`);
    for (let i = 1; i < leads.length; i++) {
      const before = leads[i - 1] as DemoResult['leads'][number];
      const after = leads[i] as DemoResult['leads'][number];
      assert.ok(after.token > before.token);
      assert.equal(before.how, 'released', `${name}: worker ${before.worker} let go cleanly`);
      assert.ok(before.to !== null && before.to <= after.from, `${name}: token ${before.token} ended before token ${after.token} began`);
    }
    assert.ok(leads.every((l) => l.how === 'released'), `${name}: every lead ended with a release`);
  }
  const name = mailerHandoff ? 'confirmation-mailer' : 'sales';
  const chain = result.leads.filter((l) => l.name === name);
  assert.ok(new Set(chain.map((l) => l.worker)).size >= 2, `${name} was led by two workers in turn`);
  assert.ok(result.handoffs.some((h) => h.name === name && h.from !== h.to));
}
