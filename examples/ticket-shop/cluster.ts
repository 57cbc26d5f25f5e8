// `npm start -- --workers N`: this process prepares the database, places the orders and watches; N
// worker processes (worker.ts) run the sales view and the mailer under leader election. Midway, the
// leader of the mailer is stopped (SIGTERM, as a deploy would) and a standby takes over.
//
// With `--partitions P` the mailer runs as P partitions shared out over the workers (each leads its
// share, ceil(P / workers)); midway the sales view's leader is stopped, and its partitions move to the
// others. The map of who leads which partition is printed before and after.
import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { openBackend } from './backend.js';
import type { DemoConfig } from './backend.js';
import { LiveDisplay } from './display.js';
import { MAILER } from './mailer.js';
import { byWorker, listPartitions, mapLines, partitionMoves, partitionOwners, shared } from './partitions.js';
import type { PartitionFacts } from './partitions.js';
import { lastBoughtPosition, ProgressReader, statusLines } from './progress.js';
import { buildReport, readBackInto, recordLeadership } from './report.js';
import type { Handoff, Lead, ReadBack, Report } from './report.js';
import { planOrders, runShop } from './shop.js';
import type { ShopTally } from './shop.js';
import type { RunOptions } from './single.js';
import { SALES_VIEW } from './views.js';
import { waitForWork } from './wait.js';
import type { WorkerMessage } from './worker.js';

const WORKER_SCRIPT = fileURLToPath(new URL('./worker.ts', import.meta.url));

interface Worker {
  index: number;
  child: ChildProcess;
  ready: boolean;
  busy: number;
  /** We asked it to stop (an exit before that is a crash). */
  stopRequested: boolean;
  exit: { code: number | null; signal: string | null } | undefined;
  exited: Promise<void>;
}

/** Resolves when `condition()` holds, checked on every message and every 50 ms; rejects on failure or timeout. */
export function until(condition: () => boolean, what: string, failure: Promise<never>, timeoutMs: number): Promise<void> {
  return Promise.race([
    failure,
    new Promise<void>((resolve, reject) => {
      const deadline = Date.now() + timeoutMs;
      const timer = setInterval(() => {
        if (condition()) {
          clearInterval(timer);
          resolve();
        } else if (Date.now() > deadline) {
          clearInterval(timer);
          reject(new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`));
        }
      }, 20);
    }),
  ]);
}

export async function runCluster(config: DemoConfig, options: RunOptions & { workers: number; partitions?: number }): Promise<Report> {
  const { partitions } = options;
  // The runners led whole, by one worker at a time (partitioned, the mailer is led partition by partition).
  const SUBSCRIPTIONS = partitions === undefined ? [SALES_VIEW, MAILER] : [SALES_VIEW];
  const backend = await openBackend(config, { reset: true });
  const workers: Worker[] = [];
  let fail: (error: Error) => void = () => undefined;
  const failure = new Promise<never>((_, reject) => (fail = reject));
  failure.catch(() => undefined);
  let display: LiveDisplay | undefined;
  const log = (line: string): void => (display ? display.log(line) : options.log(line));
  try {
    options.log(`eskit ticket-shop demo on ${backend.label}`);
    options.log(`${options.orders} orders from 8 shoppers in this process; ${options.workers} worker processes run the sales view and the mailer,`);
    if (partitions === undefined) {
      options.log('one leader each (the others stand by). The mailer\'s leader is stopped halfway through.\n');
    } else {
      options.log(`the view with one leader (the others stand by), the mailer in ${partitions} partitions shared out over the workers`);
      options.log(`(each leads at most ceil(${partitions}/${options.workers}) = ${Math.ceil(partitions / options.workers)}). The view's leader is stopped halfway through: its partitions move to the others.\n`);
    }
    const started = performance.now();

    // Leadership as the workers report it. A lead ends when its worker lets go (or loses the lock).
    const leads: Lead[] = [];
    const handoffs: Handoff[] = [];
    /** Set when the run is over and the workers are being stopped. */
    let finishing = false;
    const announced = new Set<string>();
    /** Partition moves are told once the partitions were first shared out (joining workers move many before). */
    let tellMoves = false;
    const leaderOf = (name: string): Lead | undefined => leads.filter((l) => l.name === name && l.to === undefined).sort((a, b) => b.token - a.token)[0];
    const announce = (): void => {
      for (const name of SUBSCRIPTIONS) {
        const chain = leads.filter((l) => l.name === name).sort((a, b) => a.token - b.token);
        chain.forEach((lead, i) => {
          const id = `${name}/${lead.token}`;
          if (announced.has(id)) return;
          const before = chain[i - 1];
          if (!before) {
            announced.add(id);
            log(`  worker ${lead.worker} leads ${name} (fencing token ${lead.token}); the others stand by`);
          } else if (before.to !== undefined) {
            announced.add(id);
            const gapMs = Math.max(0, lead.from - before.to);
            handoffs.push({ name, from: before.worker, to: lead.worker, token: lead.token, gapMs });
            log(`  worker ${lead.worker} took over ${name} ${gapMs} ms after worker ${before.worker} let go (fencing token ${lead.token})`);
          }
        });
      }
      for (const move of partitions === undefined ? [] : partitionMoves(leads)) {
        const id = `${move.name}/${move.token}`;
        if (announced.has(id)) continue;
        announced.add(id);
        handoffs.push({ name: move.name, from: move.from, to: move.to, token: move.token, gapMs: move.gapMs });
        if (tellMoves) log(`  ${move.name} moved from worker ${move.from} to worker ${move.to}, ${move.gapMs} ms after it let go (fencing token ${move.token})`);
      }
    };

    const onMessage = (w: Worker, message: WorkerMessage): void => {
      switch (message.type) {
        case 'ready':
          w.ready = true;
          break;
        case 'leadership': {
          const { change } = message;
          const lost = recordLeadership(leads, w.index, change);
          if (lost !== undefined) log(`  worker ${w.index} LOST the lock of ${change.name} (token ${lost})`);
          announce();
          break;
        }
        case 'stats':
        case 'stopped':
          w.busy = message.busy;
          if (message.type === 'stopped') log(`  worker ${w.index} stopped cleanly in ${message.stopMs} ms: in-flight work finished, checkpoints saved, locks released`);
          break;
        case 'failed':
          fail(new Error(`worker ${w.index}: ${message.message}`));
          break;
      }
    };

    // Workers run the TypeScript sources through tsx, like this process.
    const execArgv = ['--import', import.meta.resolve('tsx')];
    for (let index = 1; index <= options.workers; index++) {
      const args = ['--worker', String(index), ...(partitions === undefined ? [] : ['--partitions', String(partitions)])];
      const child = fork(WORKER_SCRIPT, args, { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      const w: Worker = { index, child, ready: false, busy: 0, stopRequested: false, exit: undefined, exited: Promise.resolve() };
      w.exited = new Promise((resolve) =>
        child.once('exit', (code, signal) => {
          w.exit = { code, signal };
          if (!w.stopRequested) fail(new Error(`worker ${index} exited unexpectedly (code ${String(code)}, signal ${String(signal)})`));
          resolve();
        }),
      );
      child.on('message', (message) => onMessage(w, message as WorkerMessage));
      workers.push(w);
    }
    const indexes = workers.map((w) => w.index);
    const sharedOut = (among: readonly number[]): boolean => partitions === undefined || shared(partitionOwners(leads), partitions, among);
    await until(
      () => workers.every((w) => w.ready) && SUBSCRIPTIONS.every((name) => leaderOf(name)) && sharedOut(indexes),
      partitions === undefined ? 'the workers to start and elect leaders' : 'the workers to start, elect leaders and share the partitions out',
      failure,
      60_000,
    );
    if (partitions !== undefined) {
      // Each joining worker took partitions from those that started before it: those moves are the
      // start-up. From here on, every move is told.
      announce();
      tellMoves = true;
      log(`  the mailer's ${partitions} partitions, shared out:`);
      for (const line of mapLines(partitionOwners(leads))) log(line);
    }

    const tally: ShopTally = { placed: 0, bought: 0, refunded: 0, soldOut: 0 };
    const reader = new ProgressReader(backend, partitions);
    const leaderLine = (): string =>
      `  leaders ${SUBSCRIPTIONS.map((name) => {
        const lead = leaderOf(name);
        return `${name}: ${lead ? `worker ${lead.worker} (token ${lead.token})` : finishing ? 'stopped' : 'handing over'}`;
      }).join(', ')}` +
      (partitions === undefined
        ? ''
        : `, ${MAILER} partitions: ${[...byWorker(partitionOwners(leads))].map(([worker, held]) => `worker ${worker}: ${held.length}`).join(', ') || (finishing ? 'stopped' : 'handing over')}`);
    display = new LiveDisplay({
      tty: options.tty,
      render: () => statusLines(options.orders, tally, reader.current, workers.reduce((sum, w) => sum + w.busy, 0), [leaderLine()]),
      progress: () => tally.placed / options.orders,
    });
    const polling = setInterval(() => void reader.read().catch(() => undefined), 100);
    display.start();

    // This process does not run the view: on PostgreSQL waitFor hears the worker's commits (NOTIFY);
    // on SQLite it reads the view's checkpoint every 10 ms while waiting.
    const view = backend.salesView({ checkpointPollMs: 10 });
    const readBacks: ReadBack[] = [];
    let stopped: Worker | undefined;
    let partitionFacts: PartitionFacts | undefined;
    const stopLeader = (): void => {
      // Partitioned, every worker leads some of the mailer: stop the view's leader, to show both.
      const target = partitions === undefined ? MAILER : SALES_VIEW;
      stopped = workers.find((w) => w.index === leaderOf(target)?.worker);
      if (!stopped) return fail(new Error(`no worker leads ${target} halfway through`));
      const held = SUBSCRIPTIONS.filter((name) => leaderOf(name)?.worker === stopped?.index);
      if (partitions !== undefined) {
        const before = partitionOwners(leads);
        const own = byWorker(before).get(stopped.index) ?? [];
        held.push(`of the mailer's partitions ${listPartitions(own)}`);
        partitionFacts = { count: partitions, workers: options.workers, stopped: stopped.index, before, after: new Map(), stopAt: Date.now(), settledAt: 0 };
      }
      log(`  halfway: stopping worker ${stopped.index} (SIGTERM), the leader of ${held.join(' and ')}`);
      stopped.stopRequested = true;
      stopped.child.kill('SIGTERM');
    };
    try {
      const shop = runShop({
        store: backend.eskit.store,
        orders: planOrders(options.orders),
        onOrder: (now) => {
          Object.assign(tally, now);
          if (!stopped && now.placed >= options.orders / 2) stopLeader();
        },
        readBack: readBackInto(backend, view, readBacks),
      });
      Object.assign(tally, await Promise.race([shop, failure]));
      const lastBought = await lastBoughtPosition(backend);
      await waitForWork(reader, lastBought, failure);
      // The stopped worker is gone and every subscription it led has a new leader.
      const others = indexes.filter((index) => index !== stopped?.index);
      await until(
        () => stopped?.exit !== undefined && SUBSCRIPTIONS.every((name) => leaderOf(name) !== undefined) && sharedOut(others),
        'the handoff to finish',
        failure,
        30_000,
      );
      if (partitionFacts) {
        Object.assign(partitionFacts, { after: partitionOwners(leads), settledAt: Date.now() });
        log(`  the mailer's ${partitions} partitions, shared out over the ${others.length} workers left:`);
        for (const line of mapLines(partitionFacts.after)) log(line);
      }
    } finally {
      clearInterval(polling);
      finishing = true;
      // Stopping, the workers hand partitions to each other until the last stops: not worth telling.
      tellMoves = false;
      log(`  all done: stopping the workers`);
      // Standbys first, then the leaders: so no standby takes a lock over just to hand it back.
      const leading = new Set(SUBSCRIPTIONS.map((name) => leaderOf(name)?.worker));
      const stopAll = async (group: Worker[]): Promise<void> => {
        for (const w of group) {
          w.stopRequested = true;
          if (w.exit === undefined) w.child.kill('SIGTERM');
        }
        await Promise.all(group.map((w) => w.exited));
      };
      const timeout = setTimeout(() => workers.forEach((w) => w.exit === undefined && w.child.kill('SIGKILL')), 30_000);
      await stopAll(workers.filter((w) => !leading.has(w.index)));
      await stopAll(workers);
      clearTimeout(timeout);
      await reader.read().catch(() => undefined);
      display.stop();
      display = undefined;
    }
    return await buildReport({
      backend,
      view,
      workers: options.workers,
      seconds: (performance.now() - started) / 1000,
      tally,
      readBacks,
      retried: workers.reduce((sum, w) => sum + w.busy, 0),
      leads,
      handoffs,
      workerExits: workers.map((w) => ({ worker: w.index, code: w.exit?.code ?? null, signal: w.exit?.signal ?? null })),
      partitions: partitionFacts,
    });
  } finally {
    for (const w of workers) if (w.exit === undefined) w.child.kill('SIGKILL');
    await backend.close();
  }
}
