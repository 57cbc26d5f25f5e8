// `npm start -- --dashboard`: the demo as a system that keeps running, with eskit's dashboard open on
// it, until Ctrl-C. The cluster mode's workers (2 by default) run the sales view and the mailer under
// leader election; this process places a few orders a second, opens the dashboard (actions allowed,
// with a token), and now and then stops the leading worker (SIGTERM, the next time SIGKILL) and starts
// a fresh one. Mallory's confirmation goes to the dead-letter queue; 20 s later the fake mail server
// creates her mailbox, so that Retry on the page sends it.
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openBackend, safeUrl } from './backend.js';
import type { Backend, DemoConfig } from './backend.js';
import { until } from './cluster.js';
import { LiveDisplay } from './display.js';
import { MAILER } from './mailer.js';
import { ProgressReader } from './progress.js';
import type { Progress } from './progress.js';
import { MALLORY, runLiveShop } from './shop.js';
import type { ShopTally } from './shop.js';
import { SALES_VIEW } from './views.js';
import { WorkerPool } from './live-workers.js';

/** Orders a second. */
export const ORDER_RATE = 4;
/** Between two stops of the leader. */
export const LEADER_STOP_EVERY_MS = 45_000;
/** From Mallory's first dead letter to the mail server creating her mailbox. */
export const MAILBOX_AFTER_MS = 20_000;
/** The status rows of nodes not heard from for this long are removed at the next stop of a leader. */
const PRUNE_NODES_AFTER_MS = 180_000;

/** One entry of the dashboard's action log, as far as the demo reads it. */
export interface DashboardAction {
  action: string;
  target: string;
  outcome: string;
  detail: string;
  who: { address: string; operator: string | null };
}

/** The dashboard, opened on the demo's database with actions allowed. */
export interface DemoDashboard {
  url: string;
  token: string | undefined;
  close(): Promise<void>;
}

export type OpenDashboard = (options: {
  /** `sqlite:<file>` or the PostgreSQL URL. */
  db: string;
  schema: string | undefined;
  /** The CLI's config file, for the views the page can rebuild. */
  config: string;
  port: number;
  onAction: (entry: DashboardAction) => void;
}) => Promise<DemoDashboard>;

export interface LiveOptions {
  workers: number;
  partitions?: number;
  /** 0: any free port. */
  port: number;
  tty: boolean;
  log: (line: string) => void;
  /** Aborted by Ctrl-C: the demo stops everything and ends. */
  signal: AbortSignal;
  openDashboard: OpenDashboard;
}

const CONFIG_FILE = fileURLToPath(new URL('../eskit.config.ts', import.meta.url));

/** Runs until `options.signal` aborts (resolves 0) or something fails (rejects). */
export async function runLive(config: DemoConfig, options: LiveOptions): Promise<number> {
  const { partitions } = options;
  const backend = await openBackend(config, { reset: true });
  let fail: (error: Error) => void = () => undefined;
  const failure = new Promise<never>((_, reject) => (fail = reject));
  failure.catch(() => undefined);
  let display: LiveDisplay | undefined;
  const log = (line: string): void => (display ? display.log(line) : options.log(line));
  const pool = new WorkerPool({ partitions, log, fail: (error) => fail(error) });
  const shopping = new AbortController();
  const timers: NodeJS.Timeout[] = [];
  let dashboard: DemoDashboard | undefined;
  let shop: Promise<ShopTally> | undefined;
  const story = new DeadLetterStory(backend, log);
  const tally: ShopTally = { placed: 0, bought: 0, refunded: 0, soldOut: 0 };
  const { signal } = options;
  // Ctrl-C reaches the workers too (the terminal signals the whole group): their exits are expected from now on.
  const stopped = new Promise<void>((resolve) => {
    const stop = (): void => {
      pool.closing();
      resolve();
    };
    if (signal.aborted) stop();
    else signal.addEventListener('abort', stop, { once: true });
  });
  try {
    options.log(`eskit ticket-shop demo with the dashboard, on ${backend.label}`);
    options.log(
      `${options.workers} worker processes run the sales view and the mailer${partitions === undefined ? '' : ` (in ${partitions} partitions)`} under leader election; ` +
        `this process places ${ORDER_RATE} orders a second until Ctrl-C.\n`,
    );
    // The dashboard first: a port in use stops the demo before any worker started.
    dashboard = await options.openDashboard({
      db: config.kind === 'sqlite' ? `sqlite:${resolve(config.file)}` : config.url,
      schema: config.kind === 'postgres' ? config.schema : undefined,
      config: CONFIG_FILE,
      port: options.port,
      onAction: (entry) => story.onAction(entry),
    });
    for (let i = 0; i < options.workers; i++) pool.start();
    await until(() => pool.settled() || signal.aborted, 'the workers to start and elect leaders', failure, 60_000);
    // Ctrl-C while they started: straight to the stop.
    if (!signal.aborted) {
      shop = runLiveShop({ store: backend.eskit.store, perSecond: ORDER_RATE, signal: shopping.signal, onOrder: (now) => Object.assign(tally, now) });
      shop.catch((error: unknown) => fail(error instanceof Error ? error : new Error(String(error))));
      const url = new URL(dashboard.url);
      if (dashboard.token !== undefined) url.hash = `token=${dashboard.token}`;
      tell(options.log, url.href);
    }

    let stops = 0;
    let nextStopAt = Date.now() + LEADER_STOP_EVERY_MS;
    const stopLeader = (): void => {
      // Partitioned, every worker leads some of the mailer: the view's leader is the one stopped.
      const target = partitions === undefined ? MAILER : SALES_VIEW;
      const worker = pool.workerOf(pool.leaderOf(target));
      if (!worker || !pool.settled()) {
        nextStopAt = Date.now() + 5_000;
        return;
      }
      const signal = stops++ % 2 === 0 ? 'SIGTERM' : 'SIGKILL';
      const led = pool.whole.filter((name) => pool.leaderOf(name)?.worker === worker.index);
      log(
        signal === 'SIGTERM'
          ? `  stopping worker ${worker.index}, the leader of ${led.join(' and ')}, with SIGTERM (as a deploy would): it finishes its work, saves its checkpoints and lets go`
          : `  killing worker ${worker.index}, the leader of ${led.join(' and ')}, with SIGKILL (a crash): its lease runs out, a standby takes over with a higher fencing token, and a mail in flight may go twice (at least once)`,
      );
      pool.stop(worker, signal);
      const fresh = pool.start();
      log(`  starting worker ${fresh.index}`);
      // The status rows of workers gone for 3 minutes leave the page. Runners prune rows an hour old
      // when they start; here a worker comes and goes every 45 s, so their list would grow long.
      backend.eskit.admin.runners.prune(PRUNE_NODES_AFTER_MS).catch(() => undefined);
      nextStopAt = Date.now() + LEADER_STOP_EVERY_MS;
    };

    const reader = new ProgressReader(backend, partitions);
    if (options.tty) {
      display = new LiveDisplay({
        tty: true,
        render: () => statusLines(tally, reader.current, pool.retried, pool.leaderLine(), Math.max(0, nextStopAt - Date.now()), stops),
        progress: () => 0,
      });
      display.start();
    }
    let ticking = false;
    timers.push(
      setInterval(() => {
        if (Date.now() >= nextStopAt) stopLeader();
        if (ticking) return;
        ticking = true;
        void reader
          .read()
          .then((progress) => story.check(progress))
          .catch(() => undefined)
          .finally(() => (ticking = false));
      }, 250),
    );

    await Promise.race([failure, stopped]);
  } finally {
    timers.forEach(clearInterval);
    story.stop();
    shopping.abort();
    await shop?.catch(() => undefined);
    await pool.close();
    display?.stop();
    display = undefined;
    await dashboard?.close();
    await backend.close();
  }
  const status = config.kind === 'sqlite' ? `--db sqlite:${config.file}` : `--db "${safeUrl(config.url)}" --schema ${config.schema}`;
  options.log(`\nStopped: ${tally.placed} orders placed (${tally.bought} bought, ${tally.refunded} refunded); ${pool.workers.length} workers over the run, all stopped.`);
  options.log(`The data stays. Look inside: npm run -s eskit -- status ${status}`);
  return 0;
}

/** The link, and what a newcomer should watch on the page. */
function tell(log: (line: string) => void, link: string): void {
  log(`Dashboard  ${link}`);
  log('           (open it in a browser; the token in the link lets the page retry dead letters)');
  log(`  1. Events flowing: "${SALES_VIEW}" and "${MAILER}" handle about ${ORDER_RATE + 1} events a second (EVENTS/S, with a sparkline); their LAG stays near 0.`);
  log(`  2. A leader hand-over: every ${LEADER_STOP_EVERY_MS / 1000} s the demo stops the leading worker (SIGTERM, the next time SIGKILL) and starts a fresh one: LEADER and TOKEN change.`);
  log(`  3. A dead letter: ${MALLORY.email} has no mailbox, so her confirmation lands in Dead letters; ${MAILBOX_AFTER_MS / 1000} s later the mail server creates it: press Retry.`);
  log('Ctrl-C stops everything.\n');
}

/** The terminal's live block (the page shows far more). */
function statusLines(tally: ShopTally, progress: Progress, retried: number, leaders: string, nextStopMs: number, stops: number): string[] {
  const { head, viewAt, mails, deadLetters } = progress;
  return [
    `  orders   ${tally.placed} placed (${tally.bought} bought, ${tally.refunded} refunded)    view at event ${viewAt}/${head}`,
    `  mails    ${mails} sent, ${retried} busy answers retried, ${deadLetters} dead-lettered`,
    `  leaders  ${leaders}`,
    `           the next stop of a leader in ${Math.ceil(nextStopMs / 1000)} s (${stops % 2 === 0 ? 'SIGTERM' : 'SIGKILL'})`,
  ];
}

/**
 * Mallory's dead letter, told as it goes: it appears; 20 s later the mail server creates her mailbox;
 * someone presses Retry on the page; her mail is sent and the letter is gone.
 */
class DeadLetterStory {
  #seen = false;
  #timer: NodeJS.Timeout | undefined;
  #createdAt: number | undefined;
  #sent = false;

  constructor(
    readonly backend: Backend,
    readonly log: (line: string) => void,
  ) {}

  async check(progress: Progress): Promise<void> {
    if (!this.#seen && progress.deadLetters > 0) {
      this.#seen = true;
      const [letter] = await this.backend.eskit.deadLetters.list({ limit: 1 });
      this.log(
        `  ${letter?.key ?? 'an order'}: the confirmation to ${MALLORY.email} failed for good (${letter?.attempts.at(-1)?.error ?? 'no such domain'}) ` +
          `and is a dead letter now; the mail server creates that mailbox in ${MAILBOX_AFTER_MS / 1000} s`,
      );
      this.#timer = setTimeout(() => {
        this.backend.mailboxes.create(MALLORY.email).then(
          () => {
            this.#createdAt = Date.now();
            this.log(`  the mail server has a mailbox for ${MALLORY.email} now: press Retry on the dead letter in the page`);
          },
          (error: unknown) => this.log(`  creating the mailbox failed: ${error instanceof Error ? error.message : String(error)}`),
        );
      }, MAILBOX_AFTER_MS);
    }
    if (this.#createdAt !== undefined && !this.#sent) {
      const [mail] = await this.backend.mailbox.to(MALLORY.email);
      if (mail) {
        this.#sent = true;
        this.log(`  ${mail.orderId}: retried, and the confirmation to ${MALLORY.email} was sent (by ${mail.sentBy}); the dead letter is gone`);
      }
    }
  }

  stop(): void {
    clearTimeout(this.#timer);
  }

  onAction(entry: DashboardAction): void {
    const who = entry.who.operator ?? 'someone';
    this.log(`  dashboard: ${entry.action} ${entry.target} by ${who} (${entry.who.address}): ${entry.outcome}${entry.detail ? `, ${entry.detail}` : ''}`);
    if (/retry|redrive/.test(entry.action) && entry.outcome === 'ok' && this.#createdAt === undefined) {
      this.log(`  (the mailbox of ${MALLORY.email} does not exist yet: the mail fails again and the letter comes back with one more attempt)`);
    }
  }
}
