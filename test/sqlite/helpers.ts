import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** A path for a fresh database file under the OS temp directory (not created yet). */
export function tempDatabasePath(label = 'test'): string {
  return join(tmpdir(), `eskit-sqlite-${label}-${process.pid}-${randomUUID()}.db`);
}

/** Deletes a database file and its WAL companions. */
export function removeDatabase(path: string): void {
  for (const suffix of ['', '-wal', '-shm', '-journal']) rmSync(path + suffix, { force: true });
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
 */
export async function runChildrenTogether(argLists: string[][]): Promise<unknown[]> {
  const children = argLists.map((args) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    const ready = new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (chunk: string) => {
        stdout += chunk;
        if (stdout.startsWith('ready\n')) resolve();
      });
      child.once('exit', () => reject(new Error(`child ${args.join(' ')} exited before it was ready:\n${stderr}`)));
    });
    child.stderr.on('data', (chunk: string) => (stderr += chunk));
    const done = new Promise<ChildResult>((resolve) => child.once('exit', (code) => resolve({ code, stdout, stderr })));
    return { child, args, ready, done };
  });
  try {
    await Promise.all(children.map((c) => c.ready));
  } catch (error) {
    for (const { child } of children) child.kill();
    throw error;
  }
  for (const { child } of children) child.stdin.end('go\n');
  const results: unknown[] = [];
  for (const { args, done } of children) {
    const { code, stdout, stderr } = await done;
    if (code !== 0) throw new Error(`child ${args.join(' ')} exited with ${String(code)}:\n${stderr}`);
    const last = stdout.trim().split('\n').pop() ?? '';
    results.push(JSON.parse(last));
  }
  return results;
}
