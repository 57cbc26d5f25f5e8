// `npm run bench -- [groups...] [--quick] [--filter <text>]...`
//
// Each figure is eskit measured beside a raw-driver baseline doing the same work in the same run; the
// machine is shared and noisy, so compare ratios, not absolute numbers. stdout carries one JSON line
// per figure (pipe it to a file or jq); the table and progress go to stderr.
//
// Adding a group: write bench/<group>.ts exporting a `BenchGroup` and add it to `groups` below.
import { BenchRun, runPendingCleanups } from './lib/context.js';
import type { BenchGroup } from './lib/context.js';
import { figuresTable } from './lib/table.js';
import { automationBench } from './automation.js';
import { commandBench } from './command.js';
import { deciderBench } from './decider.js';
import { leadershipBench } from './leadership.js';
import { scaleBench } from './scale.js';
import { storeBench } from './store.js';
import { subscriptionBench } from './subscription.js';
import { viewBench } from './view.js';

const groups: Record<string, BenchGroup> = {
  store: storeBench,
  leadership: leadershipBench,
  subscription: subscriptionBench,
  automation: automationBench,
  view: viewBench,
  command: commandBench,
  decider: deciderBench,
  scale: scaleBench,
};

const usage = `usage: npm run bench -- [group...] [--quick] [--filter <text>]...
  groups:   ${Object.keys(groups).join(', ')} (default: all)
  --quick   fewer operations (a group in well under a minute)
  --filter  only figures whose name contains <text> (repeatable), e.g. --filter postgres
  env:      ESKIT_BENCH_PG_URL (else ESKIT_TEST_PG_URL, else postgres://postgres@127.0.0.1:5432/test)`;

function parseArgs(argv: readonly string[]): { names: string[]; quick: boolean; filters: string[] } {
  const names: string[] = [];
  const filters: string[] = [];
  let quick = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--quick') quick = true;
    else if (arg === '--help' || arg === '-h') {
      process.stderr.write(`${usage}\n`);
      process.exit(0);
    } else if (arg === '--filter' || arg.startsWith('--filter=')) {
      const value = arg === '--filter' ? argv[++i] : arg.slice('--filter='.length);
      if (!value) fatal('--filter needs a text, e.g. --filter postgres');
      filters.push(value);
    } else if (arg.startsWith('-')) fatal(`unknown option ${arg}`);
    else if (!(arg in groups)) fatal(`unknown group "${arg}"`);
    else names.push(arg);
  }
  return { names: names.length === 0 ? Object.keys(groups) : [...new Set(names)], quick, filters };
}

function fatal(message: string): never {
  process.stderr.write(`${message}\n${usage}\n`);
  process.exit(2);
}

async function main(): Promise<void> {
  const { names, quick, filters } = parseArgs(process.argv.slice(2));
  const run = new BenchRun({
    quick,
    filters,
    postgresUrl: process.env.ESKIT_BENCH_PG_URL ?? process.env.ESKIT_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test',
  });
  process.on('SIGINT', () => {
    // A second Ctrl-C leaves at once, cleaned up or not.
    if (run.interrupted) process.exit(130);
    run.interrupted = true;
    process.stderr.write('\ninterrupted: cleaning up (Ctrl-C again to leave at once)\n');
    void runPendingCleanups().finally(() => process.exit(130));
  });
  const started = Date.now();
  for (const name of names) {
    run.log(`== ${name}${quick ? ' (quick)' : ''}`);
    try {
      await (groups[name] as BenchGroup)(run);
    } catch (error) {
      run.fail(`group ${name}`, error);
    }
    await runPendingCleanups();
    if (run.interrupted) return;
  }
  // The SIGINT handler exits once its cleanups are done; until then, operations cut short by them fail.
  if (run.interrupted) return;
  if (run.figures.length > 0) run.log(`\n${figuresTable(run.figures)}`);
  run.log(`\n${run.figures.length} figures in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  if (run.failures.length > 0) {
    run.log(`failed: ${run.failures.join('; ')}`);
    process.exitCode = 1;
  }
}

await main();
