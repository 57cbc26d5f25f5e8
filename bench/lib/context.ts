import { compare, figureJson } from './measure.js';
import type { Comparison, Figure } from './measure.js';
import { significant } from './stats.js';

/** What a benchmark group gets to work with. */
export interface BenchContext {
  /** `--quick`: fewer operations, so that each group finishes in well under a minute. */
  readonly quick: boolean;
  /** Where PostgreSQL is: ESKIT_BENCH_PG_URL, else ESKIT_TEST_PG_URL, else the local test database. */
  readonly postgresUrl: string;
  /** `quick` under --quick, else `full`. */
  pick<T>(quick: T, full: T): T;
  /** False when `--filter` excludes this figure name: skip its setup as well as its measurement. */
  selected(bench: string): boolean;
  /** Measures eskit beside its baseline, prints the figure's JSON line and keeps it for the table. */
  measure(spec: Comparison): Promise<Figure | undefined>;
  /** A progress line on stderr (stdout carries only the JSON lines). */
  log(message: string): void;
  /** Reports a failed part of a group; the run goes on with the rest and exits non-zero. */
  fail(what: string, error: unknown): void;
  /**
   * Registers a cleanup (drop a schema, remove a file) that also runs if the run is interrupted.
   * Returns a function that runs it now, once.
   */
  defer(cleanup: () => Promise<void> | void): () => Promise<void>;
}

/** A benchmark group: `bench/<group>.ts` exports one, `bench/index.ts` registers it by name. */
export type BenchGroup = (ctx: BenchContext) => Promise<void>;

const pending = new Set<() => Promise<void>>();

/** Runs every cleanup still registered (on Ctrl-C, or after a group threw). */
export async function runPendingCleanups(): Promise<void> {
  for (const run of [...pending].reverse()) await run();
}

export class BenchRun implements BenchContext {
  readonly figures: Figure[] = [];
  readonly failures: string[] = [];
  /** Set on Ctrl-C: cleanups are running, and what they cut short is not a failure to report. */
  interrupted = false;
  readonly quick: boolean;
  readonly postgresUrl: string;
  readonly #filters: readonly string[];

  constructor(options: { quick: boolean; filters: readonly string[]; postgresUrl: string }) {
    this.quick = options.quick;
    this.#filters = options.filters;
    this.postgresUrl = options.postgresUrl;
  }

  pick<T>(quick: T, full: T): T {
    return this.quick ? quick : full;
  }

  selected(bench: string): boolean {
    return this.#filters.length === 0 || this.#filters.some((filter) => bench.includes(filter));
  }

  async measure(spec: Comparison): Promise<Figure | undefined> {
    if (!this.selected(spec.bench)) return undefined;
    const figure = await compare(spec);
    this.figures.push(figure);
    process.stdout.write(`${figureJson(figure)}\n`);
    this.log(
      `${figure.bench}: ${Math.round(figure.value)} vs ${Math.round(figure.baseline)} ${figure.unit}, ratio ${figure.ratio.toFixed(3)}, ` +
        `p50 ${significant(figure.p50Ms, 2)} ms vs ${significant(figure.baselineP50Ms, 2)} ms`,
    );
    return figure;
  }

  log(message: string): void {
    process.stderr.write(`${message}\n`);
  }

  fail(what: string, error: unknown): void {
    if (this.interrupted) return;
    const reason = error instanceof Error ? (error.stack ?? error.message) : String(error);
    this.failures.push(what);
    this.log(`FAILED ${what}: ${reason}`);
  }

  defer(cleanup: () => Promise<void> | void): () => Promise<void> {
    let done = false;
    const run = async (): Promise<void> => {
      if (done) return;
      done = true;
      pending.delete(run);
      try {
        await cleanup();
      } catch (error) {
        this.log(`cleanup failed (remove it by hand): ${error instanceof Error ? error.message : String(error)}`);
      }
    };
    pending.add(run);
    return run;
  }
}
