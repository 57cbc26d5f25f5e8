// The `scale` group's node processes (bench/fixtures/scale-node.ts) as the benchmark process sees
// them: commands out, JSON lines in, which partitions each one holds, and waits on all of them at once.
import { fileURLToPath } from 'node:url';
import type { NodeCommand, NodeOptions } from '../fixtures/scale-node.js';
import type { BenchContext } from './context.js';
import { BenchChild } from './child.js';
import type { Line } from './child.js';

const NODE = fileURLToPath(new URL('../fixtures/scale-node.ts', import.meta.url));

export type { Line } from './child.js';

/** The partitions of every partitioned runner of the group. */
export const PARTITIONS = 16;
/** Handler calls in flight at once per node process, across its partitions. */
export const CAP = 2;
/** What the handler waits per event (a timer, standing in for a downstream call). */
export const HANDLER_MS = 5;
/** The event type a node holds in its handler until it stops, when `data.holder` is its index. */
export const HOLD_TYPE = 'ScaleHold';

/**
 * Milliseconds on CLOCK_MONOTONIC, which every process on the host reads alike: the node processes
 * print their times on it.
 */
export function now(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/** One node process. Its 'handled' lines go to `onHandled` (not kept: thousands per round). */
export class NodeProcess {
  /** The partitions this node held at its last 'owned' line (since the last 'open'), and when. */
  owned: number[] = [];
  ownedAt = 0;
  /** Lock acquire calls for partitions since the process started (lane starts), at its last 'owned' line. */
  acquires = 0;
  onHandled: ((line: Line) => void) | undefined;
  readonly #child: BenchChild;

  constructor(
    ctx: BenchContext,
    readonly index: number,
    connectionString: string,
  ) {
    const options: NodeOptions = { connectionString, index };
    this.#child = new BenchChild(ctx, `node ${index}`, NODE, options, (line) => {
      if (line.ev === 'handled') {
        this.onHandled?.(line);
        return false;
      }
      if (line.ev === 'owned') {
        this.owned = line.partitions as number[];
        this.ownedAt = Number(line.at);
        this.acquires = Number(line.acquires);
      }
      return true;
    });
  }

  get lines(): readonly Line[] {
    return this.#child.lines;
  }

  get stderr(): string {
    return this.#child.stderr;
  }

  /** Index of the next line: wait for lines from here on. */
  get mark(): number {
    return this.#child.mark;
  }

  send(command: NodeCommand): void {
    if (command.cmd === 'open') this.owned = [];
    this.#child.send(JSON.stringify(command));
  }

  /** The first line from index `from` on with `ev`, and matching `predicate` if given. */
  find(ev: string, from: number, predicate: (line: Line) => boolean = () => true): Line | undefined {
    for (let i = from; i < this.lines.length; i++) {
      const line = this.lines[i] as Line;
      if (line.ev === ev && predicate(line)) return line;
    }
    return undefined;
  }

  /** Throws when the node reported a failure after `from`, or exited. */
  check(from: number): void {
    const failure = this.find('error', from) ?? this.find('failed', from);
    if (failure) throw new Error(`node ${this.index}: ${String(failure.message)}\n${this.stderr.slice(-2000)}`);
    if (this.#child.exit !== undefined) throw new Error(`node ${this.index} exited (${this.#child.exit}):\n${this.stderr.slice(-2000)}`);
  }

  /** Waits for a line as `find` finds it. */
  async next(ev: string, from: number, what: string, timeoutMs = 30_000, predicate?: (line: Line) => boolean): Promise<Line> {
    let found: Line | undefined;
    await waitUntil([this], () => (found = this.find(ev, from, predicate)) !== undefined, what, timeoutMs, from);
    return found as Line;
  }

  /** Runs `wake` after each chunk of output (and at exit) until the returned remover is called. */
  listen(wake: () => void): () => void {
    return this.#child.listen(wake);
  }

  /** Ends the process (its stdin closes: it kills itself; SIGKILL as well); resolves once it is gone. */
  end(): Promise<void> {
    return this.#child.end();
  }
}

/**
 * Resolves once `condition` holds, tested now and after every chunk any of `nodes` prints. Rejects
 * after `timeoutMs`, or when a node reports a failure (after its line `from`) or exits.
 */
export function waitUntil(nodes: readonly NodeProcess[], condition: () => boolean, what: string, timeoutMs: number, from: number | readonly number[] = 0): Promise<void> {
  const fromOf = (node: NodeProcess, i: number): number => (typeof from === 'number' ? from : (from[i] ?? 0));
  return new Promise((resolve, reject) => {
    const removers: Array<() => void> = [];
    const finish = (error?: Error): void => {
      clearTimeout(timer);
      for (const remove of removers) remove();
      if (error) reject(error);
      else resolve();
    };
    const test = (): void => {
      try {
        nodes.forEach((node, i) => node.check(fromOf(node, i)));
        if (condition()) finish();
      } catch (error) {
        finish(error instanceof Error ? error : new Error(String(error)));
      }
    };
    const timer = setTimeout(() => {
      const held = nodes.map((node) => `node ${node.index}: [${node.owned.join(',')}]`).join('; ');
      finish(new Error(`timed out after ${timeoutMs} ms waiting for ${what} (partitions held: ${held})\n${nodes.map((n) => n.stderr.slice(-1000)).join('\n')}`));
    }, timeoutMs);
    for (const node of nodes) removers.push(node.listen(test));
    test();
  });
}

/**
 * Every one of the `partitions` held by exactly one of `nodes`, none over its share
 * ceil(partitions / nodes): the state the partitions settle into. Returns when it was reached (the
 * latest of the nodes' last changes, on CLOCK_MONOTONIC), or undefined.
 */
export function settledAt(nodes: readonly NodeProcess[], partitions: number): number | undefined {
  const share = Math.ceil(partitions / nodes.length);
  const seen = new Set<number>();
  let total = 0;
  for (const node of nodes) {
    if (node.owned.length > share) return undefined;
    for (const partition of node.owned) seen.add(partition);
    total += node.owned.length;
  }
  if (seen.size !== partitions || total !== partitions) return undefined;
  return Math.max(...nodes.map((node) => node.ownedAt));
}

/** Waits until the partitions are settled over `nodes` (see settledAt); returns when they were. */
export async function untilSettled(nodes: readonly NodeProcess[], partitions: number, timeoutMs = 60_000): Promise<number> {
  let at: number | undefined;
  const marks = nodes.map((node) => node.mark);
  await waitUntil(nodes, () => (at = settledAt(nodes, partitions)) !== undefined, `${partitions} partitions to settle over ${nodes.length} node(s)`, timeoutMs, marks);
  return at as number;
}

/** Sends `command` to every node and waits for each one's `ev` line. */
export async function all(nodes: readonly NodeProcess[], command: NodeCommand, ev: string, timeoutMs = 60_000): Promise<Line[]> {
  const marks = nodes.map((node) => node.mark);
  for (const node of nodes) node.send(command);
  return Promise.all(nodes.map((node, i) => node.next(ev, marks[i] as number, `node ${node.index} to answer ${command.cmd} with ${ev}`, timeoutMs)));
}
