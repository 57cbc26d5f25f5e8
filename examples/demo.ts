// The ticket-shop demo: `npm start`. Runs on SQLite under ./data with nothing to set up.
//
// Shoppers buy and refund tickets for three concerts through a decider (racing on the same streams:
// optimistic concurrency). A state view keeps sales totals in SQL tables, and an automation mails a
// confirmation per order through a flaky fake mail server (watch the retries, and the dead letters of
// the one customer whose address does not exist). See docs/getting-started.md.
//
//   npm start                                   SQLite in ./data (ESKIT_DEMO_DIR to change)
//   DATABASE_URL=postgres://... npm start       PostgreSQL, schema eskit_demo (ESKIT_DEMO_SCHEMA)
//   npm start -- --workers 3                    three worker processes under leader election;
//                                               the leader is stopped midway and another takes over
//   npm start -- --workers 3 --partitions 12    the mailer in 12 partitions shared out over the
//                                               workers; a worker stops midway, its partitions move
//   npm start -- --orders 1000 --json           more orders; a JSON summary as the last line
//   npm start -- --dashboard                    keeps running (2 workers, orders trickling in, the leader
//                                               stopped every 45 s) with eskit's dashboard open, until Ctrl-C
import { parseArgs } from 'node:util';
import { openDashboard } from '../src/cli/index.js';
import { configFromEnv, UsageError } from './ticket-shop/backend.js';
import { runCluster } from './ticket-shop/cluster.js';
import { runLive } from './ticket-shop/live.js';
import type { OpenDashboard } from './ticket-shop/live.js';
import type { Report } from './ticket-shop/report.js';
import { runSingle } from './ticket-shop/single.js';

const HELP = `Usage: npm start -- [--workers N] [--partitions N] [--orders N] [--json]
       npm start -- --dashboard [--workers N] [--partitions N] [--port N]

  --workers N     run the view and the mailer in N worker processes (2 to 16) under leader election,
                  stop the leader midway and show the handoff
  --partitions N  run the mailer in N partitions (2 to 64), keyed by order id; with --workers, shared
                  out over the workers (which worker leads which), and moving when one stops
  --orders N      how many orders the shoppers place (default 400)
  --json          print a JSON summary as the last line
  --dashboard     keep running until Ctrl-C, with eskit's dashboard open (actions allowed): workers
                  (default 2), orders trickling in, the leader stopped every 45 s and a fresh worker
                  started, a dead letter to retry from the page
  --port N        the dashboard's port on 127.0.0.1 (default 4300; 0: any free port)

Environment:
  DATABASE_URL=postgres://...   run on PostgreSQL instead of SQLite
  ESKIT_DEMO_SCHEMA             the PostgreSQL schema (default eskit_demo; dropped and recreated each run,
                                and only ever one the demo created: it marks its schema with a comment)
  ESKIT_DEMO_DIR                where the SQLite file goes (default ./data)`;

function positive(value: string | undefined, name: string, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`${name} must be a whole number from ${min} to ${max}, got "${value}"`);
  return n;
}

/** Aborted by Ctrl-C in the --dashboard mode, whose normal end it is (the other modes exit at once). */
const interrupted = new AbortController();
let stopsGracefully = false;

/** A usage error is exit 2 (its message is enough); anything else failed the demo: exit 1. */
function failed(error: unknown): number {
  if (error instanceof UsageError) {
    console.error(error.message);
    return 2;
  }
  console.error(`The demo failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  return 1;
}

async function main(): Promise<number> {
  let args;
  try {
    args = parseArgs({
      options: {
        workers: { type: 'string' },
        partitions: { type: 'string' },
        orders: { type: 'string' },
        json: { type: 'boolean', default: false },
        dashboard: { type: 'boolean', default: false },
        port: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (error) {
    console.error(`${error instanceof Error ? error.message : String(error)}\n\n${HELP}`);
    return 2;
  }
  if (args.help) {
    console.log(HELP);
    return 0;
  }
  if (args.dashboard) return dashboard(args);
  let report: Report;
  try {
    if (args.port !== undefined) throw new UsageError('--port is the dashboard\'s: use it with --dashboard');
    const config = configFromEnv();
    const orders = positive(args.orders, '--orders', 400, 10, 100_000);
    const workers = positive(args.workers, '--workers', 0, 2, 16);
    const partitions = args.partitions === undefined ? undefined : positive(args.partitions, '--partitions', 0, 2, 64);
    const options = { orders, partitions, tty: process.stdout.isTTY === true, log: (line: string) => console.log(line) };
    report = workers > 0 ? await runCluster(config, { ...options, workers }) : await runSingle(config, options);
  } catch (error) {
    return failed(error);
  }
  console.log(`\n${report.lines.join('\n')}`);
  if (args.json) console.log(JSON.stringify(report.result));
  return report.ok ? 0 : 1;
}

/** `--dashboard`: runs until Ctrl-C, then stops the workers and the dashboard and exits 0. */
async function dashboard(args: { workers?: string; partitions?: string; orders?: string; json: boolean; port?: string }): Promise<number> {
  try {
    if (args.orders !== undefined) throw new UsageError('--orders does not go with --dashboard: the orders keep coming until Ctrl-C');
    if (args.json) throw new UsageError('--json does not go with --dashboard: it runs until Ctrl-C, with no summary');
    const config = configFromEnv();
    const workers = positive(args.workers, '--workers', 2, 2, 16);
    const partitions = args.partitions === undefined ? undefined : positive(args.partitions, '--partitions', 0, 2, 64);
    const port = positive(args.port, '--port', 4300, 0, 65_535);
    stopsGracefully = true;
    return await runLive(config, {
      workers,
      partitions,
      port,
      tty: process.stdout.isTTY === true,
      log: (line: string) => console.log(line),
      signal: interrupted.signal,
      openDashboard: openDemoDashboard,
    });
  } catch (error) {
    return failed(error);
  }
}

/** eskit's dashboard on the demo's database: on 127.0.0.1, actions allowed (the token comes with the URL). */
const openDemoDashboard: OpenDashboard = async ({ db, schema, config, port, onAction }) => {
  try {
    return await openDashboard({ db, schema, config, host: '127.0.0.1', port, allowActions: true, onAction });
  } catch (error) {
    if ((error as { code?: unknown }).code === 'EADDRINUSE') throw new UsageError(`Port ${port} is in use (another dashboard?): pass --port <another>, or --port 0 for any free one.`);
    throw error;
  }
};

// Ctrl-C: stop at once. The databases are crash-safe, and workers (which get the signal too) stop
// gracefully on their own. With --dashboard, Ctrl-C is the normal end: it stops the workers and the
// dashboard first (a second Ctrl-C stops at once).
process.on('SIGINT', () => {
  if (stopsGracefully && !interrupted.signal.aborted) {
    process.stdout.write('\nStopping the workers and the dashboard (Ctrl-C again to stop at once).\n');
    interrupted.abort();
    return;
  }
  process.stdout.write('\nInterrupted.\n');
  process.exit(130);
});

// Let the output drain and the process end by itself; should a connection or a timer be left behind
// by a failure, end it anyway rather than hang.
const code = await main();
process.exitCode = code;
setTimeout(() => process.exit(code), 2_000).unref();
