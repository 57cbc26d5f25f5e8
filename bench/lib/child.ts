// A benchmark's child process (a writer, a node): JSON lines in, commands out, killed on Ctrl-C or
// when the run gives up. One class for every group that runs fixtures in processes of their own.
import { spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { BenchContext } from './context.js';
import { readJsonLines } from './json-lines.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export type Line = Record<string, unknown>;

export class BenchChild {
  /** The lines it printed (those `keep` kept). */
  readonly lines: Line[] = [];
  stderr = '';
  /** How it exited, once it has. */
  exit: string | undefined;
  readonly #child: ChildProcessWithoutNullStreams;
  readonly #wakes = new Set<() => void>();
  readonly #exited: Promise<void>;

  /** `keep`: false for lines not to keep (thousands per round), after looking at them. */
  constructor(ctx: BenchContext, readonly label: string, script: string, options: unknown, keep: (line: Line) => boolean = () => true) {
    this.#child = spawn(process.execPath, ['--import', 'tsx', script, JSON.stringify(options)], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
    // A write to a process that just died must not take this one down.
    this.#child.stdin.on('error', () => undefined);
    this.#child.stderr.setEncoding('utf8');
    readJsonLines(
      this.#child.stdout,
      (line) => {
        if (keep(line)) this.lines.push(line);
      },
      (text) => (this.stderr += `[stdout] ${text}\n`),
      () => this.#wake(),
    );
    this.#child.stderr.on('data', (chunk: string) => (this.stderr += chunk));
    this.#exited = new Promise((resolve) =>
      this.#child.once('close', (code, signal) => {
        this.exit = `code ${String(code)}, signal ${String(signal)}`;
        this.#wake();
        resolve();
      }),
    );
    // Killed on Ctrl-C or when the run gives up; unregistered once it has exited.
    const end = ctx.defer(() => this.end());
    void this.#exited.then(end);
  }

  /** Index of the next line: wait for lines from here on. */
  get mark(): number {
    return this.lines.length;
  }

  send(line: string): void {
    this.#child.stdin.write(`${line}\n`);
  }

  /** The first line with `ev` from index `from` on; rejects if the process exits first or after `timeoutMs`. */
  next(ev: string, from: number, timeoutMs: number): Promise<Line> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const line = this.lines.slice(from).find((l) => l.ev === ev);
        if (line === undefined && this.exit === undefined) return;
        this.#wakes.delete(check);
        clearTimeout(timer);
        if (line !== undefined) resolve(line);
        else reject(new Error(`${this.label} exited (${String(this.exit)}) before printing "${ev}":\n${this.stderr.slice(-4000)}`));
      };
      const timer = setTimeout(() => {
        this.#wakes.delete(check);
        reject(new Error(`${this.label} printed no "${ev}" in ${timeoutMs} ms:\n${this.stderr.slice(-4000)}`));
      }, timeoutMs);
      this.#wakes.add(check);
      check();
    });
  }

  /** Runs `wake` after each chunk of output (and at exit) until the returned remover is called. */
  listen(wake: () => void): () => void {
    this.#wakes.add(wake);
    return () => this.#wakes.delete(wake);
  }

  #wake(): void {
    for (const wake of this.#wakes) wake();
  }

  /** Waits up to `graceMs` for it to exit on its own, then ends it (stdin closed, SIGKILL); resolves once it is gone. */
  async end(graceMs = 0): Promise<void> {
    if (this.exit === undefined && graceMs > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.#exited, new Promise((resolve) => (timer = setTimeout(resolve, graceMs)))]);
      clearTimeout(timer);
    }
    if (this.exit === undefined) {
      this.#child.stdin.end();
      this.#child.kill('SIGKILL');
    }
    await this.#exited;
  }
}
