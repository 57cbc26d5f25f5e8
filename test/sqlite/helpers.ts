import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach } from 'node:test';
import { fileURLToPath } from 'node:url';

/** A path for a fresh database file under the OS temp directory (not created yet). */
export function tempDatabasePath(label = 'test'): string {
  return join(tmpdir(), `eskit-sqlite-${label}-${process.pid}-${randomUUID()}.db`);
}

/** Deletes a database file and its WAL companions. */
export function removeDatabase(path: string): void {
  for (const suffix of ['', '-wal', '-shm', '-journal']) rmSync(path + suffix, { force: true });
}

/**
 * Database files and handles of a test file, cleaned up after each test: handles closed newest first,
 * then the files removed. Call once at the top of a file; `freshPath()` names a file that goes too.
 */
export function databasesAfterEach(label: string): { freshPath(): string; closeAfterTest(close: () => unknown): void } {
  const closers: Array<() => unknown> = [];
  const files: string[] = [];
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
    for (const path of files.splice(0)) removeDatabase(path);
  });
  return {
    freshPath() {
      const path = tempDatabasePath(label);
      files.push(path);
      return path;
    },
    closeAfterTest(close) {
      closers.push(close);
    },
  };
}

export interface ChildResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

const CHILD = fileURLToPath(new URL('./child.ts', import.meta.url));

/**
 * Starts one `child.ts` process per argument list, waits until every one of them has loaded and said
 * "ready", then releases them all at once and resolves with each one's last stdout line, parsed.
 * A watchdog kills children still running after `timeoutMs`, so a hang fails the test instead of stalling it.
 */
export async function runChildrenTogether(argLists: string[][], timeoutMs = 60_000): Promise<unknown[]> {
  const children = argLists.map((args) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => (stderr += chunk));
    // 'close' (not 'exit'): fires once the output pipes are drained too.
    const done = new Promise<ChildResult>((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
    const ready = new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (chunk: string) => {
        stdout += chunk;
        if (stdout.startsWith('ready\n')) resolve();
      });
      void done.then(() => reject(new Error(`child ${args.join(' ')} exited before it was ready:\n${stderr}`)));
    });
    return { child, args, ready, done };
  });
  let timedOut = false;
  const watchdog = setTimeout(() => {
    timedOut = true;
    for (const { child } of children) child.kill();
  }, timeoutMs);
  try {
    try {
      await Promise.all(children.map((c) => c.ready));
    } catch (error) {
      for (const { child } of children) child.kill();
      await Promise.all(children.map((c) => c.done));
      throw error;
    }
    for (const { child } of children) child.stdin.end('go\n');
    // Wait for every child before judging any, so none is still writing files when the test cleans up.
    const outcomes = await Promise.all(children.map((c) => c.done));
    if (timedOut) throw new Error(`children still running after ${timeoutMs} ms were killed`);
    const results: unknown[] = [];
    for (const [index, { args }] of children.entries()) {
      const { code, stdout, stderr } = outcomes[index] as ChildResult;
      if (code !== 0) throw new Error(`child ${args.join(' ')} exited with ${String(code)}:\n${stderr}`);
      const last = stdout.trim().split('\n').pop() ?? '';
      results.push(JSON.parse(last));
    }
    return results;
  } finally {
    clearTimeout(watchdog);
  }
}
