// `npm start -- --dashboard`: the worker processes of the live demo. As in the cluster mode, each runs
// the sales view and the mailer under leader election (worker.ts, here with --live); unlike there,
// workers come and go while the demo runs: now and then the leader is stopped (SIGTERM or SIGKILL) and
// a fresh worker started. This file keeps the pool, follows who leads what from the workers' reports,
// and says it as it happens.
import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { MAILER } from './mailer.js';
import { mapLine, partitionOwners, shared } from './partitions.js';
import { recordLeadership } from './report.js';
import type { Lead } from './report.js';
import { SALES_VIEW } from './views.js';
import type { WorkerMessage } from './worker.js';

const WORKER_SCRIPT = fileURLToPath(new URL('./worker.ts', import.meta.url));

export interface LiveWorker {
  index: number;
  child: ChildProcess;
  ready: boolean;
  /** Busy answers of the mail server it retried. */
  busy: number;
  /** How we stopped it (an exit before that is a crash). */
  stoppedWith: 'SIGTERM' | 'SIGKILL' | undefined;
  exit: { code: number | null; signal: string | null } | undefined;
  exited: Promise<void>;
}

export interface PoolOptions {
  /** `--partitions N`: the mailer's partitions are shared out over the workers. */
  partitions?: number;
  log: (line: string) => void;
  /** A worker failed, or exited without being asked to: the demo ends. */
  fail: (error: Error) => void;
}

export class WorkerPool {
  readonly workers: LiveWorker[] = [];
  /** Leadership as the workers report it (a killed worker's leads end when it is killed). */
  readonly leads: Lead[] = [];
  /** The runners led whole: partitioned, the mailer is led partition by partition. */
  readonly whole: readonly string[];
  #next = 1;
  #announced = new Set<string>();
  #map = '';
  #closing = false;

  constructor(readonly options: PoolOptions) {
    this.whole = options.partitions === undefined ? [SALES_VIEW, MAILER] : [SALES_VIEW];
  }

  /** The workers neither stopped nor exited. */
  get alive(): LiveWorker[] {
    return this.workers.filter((w) => w.stoppedWith === undefined && w.exit === undefined);
  }

  /** Busy answers retried, over every worker that ran. */
  get retried(): number {
    return this.workers.reduce((sum, w) => sum + w.busy, 0);
  }

  /** Forks the next worker (workers are numbered 1, 2, 3, ... over the whole run). */
  start(): LiveWorker {
    const index = this.#next++;
    const { partitions } = this.options;
    const args = ['--worker', String(index), '--live', ...(partitions === undefined ? [] : ['--partitions', String(partitions)])];
    // Workers run the TypeScript sources through tsx, like this process.
    const child = fork(WORKER_SCRIPT, args, { execArgv: ['--import', import.meta.resolve('tsx')], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const w: LiveWorker = { index, child, ready: false, busy: 0, stoppedWith: undefined, exit: undefined, exited: Promise.resolve() };
    w.exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        w.exit = { code, signal };
        this.#endLeads(w, 'lost');
        if (w.stoppedWith === undefined && !this.#closing) {
          // Exit code 0: it was stopped from outside, gracefully (a signal to its process); otherwise it crashed.
          if (code === 0) this.options.log(`  worker ${index} was stopped from outside`);
          else this.options.fail(new Error(`worker ${index} exited unexpectedly (code ${String(code)}, signal ${String(signal)})`));
        }
        resolve();
      }),
    );
    child.on('message', (message) => this.#onMessage(w, message as WorkerMessage));
    this.workers.push(w);
    return w;
  }

  /** The current lead of `name` (the open one with the highest token). */
  leaderOf(name: string): Lead | undefined {
    return this.leads.filter((l) => l.name === name && l.to === undefined).sort((a, b) => b.token - a.token)[0];
  }

  workerOf(lead: Lead | undefined): LiveWorker | undefined {
    return lead === undefined ? undefined : this.workers.find((w) => w.index === lead.worker);
  }

  /** Every live worker started, every runner led, and the partitions shared out over the live workers. */
  settled(): boolean {
    const alive = this.alive;
    const { partitions } = this.options;
    return (
      alive.every((w) => w.ready) &&
      this.whole.every((name) => this.leaderOf(name) !== undefined) &&
      (partitions === undefined || shared(partitionOwners(this.leads), partitions, alive.map((w) => w.index)))
    );
  }

  /**
   * SIGTERM: the worker finishes its work in flight, saves its checkpoints and releases its locks, and a
   * standby takes over at once. SIGKILL: a crash; its leases run out (SQLite: up to 5 s; PostgreSQL
   * frees the locks with the dead connection) and a standby takes over with a higher fencing token.
   */
  stop(w: LiveWorker, signal: 'SIGTERM' | 'SIGKILL'): void {
    w.stoppedWith = signal;
    // A killed worker cannot report the end of its leads: they end now.
    if (signal === 'SIGKILL') this.#endLeads(w, 'lost');
    w.child.kill(signal);
  }

  /** From now on the workers' exits are expected (Ctrl-C reaches them too), and nothing more is told. */
  closing(): void {
    this.#closing = true;
  }

  /** Stops every worker (standbys first, so that none takes a lock over only to hand it back), gracefully. */
  async close(): Promise<void> {
    this.closing();
    const leading = new Set(this.leads.filter((l) => l.to === undefined).map((l) => l.worker));
    const stopAll = async (group: LiveWorker[]): Promise<void> => {
      for (const w of group) if (w.exit === undefined && w.stoppedWith !== 'SIGKILL') this.stop(w, 'SIGTERM');
      await Promise.all(group.map((w) => w.exited));
    };
    const timeout = setTimeout(() => this.workers.forEach((w) => w.exit === undefined && w.child.kill('SIGKILL')), 15_000);
    await stopAll(this.workers.filter((w) => !leading.has(w.index)));
    await stopAll(this.workers);
    clearTimeout(timeout);
  }

  /** "sales: worker 1 (token 1), confirmation-mailer: worker 2 (token 2)", and the partitions' map. */
  leaderLine(): string {
    const whole = this.whole.map((name) => {
      const lead = this.leaderOf(name);
      return `${name}: ${lead ? `worker ${lead.worker} (token ${lead.token})` : 'handing over'}`;
    });
    if (this.options.partitions !== undefined) whole.push(`${MAILER} partitions: ${mapLine(partitionOwners(this.leads))}`);
    return whole.join(', ');
  }

  #endLeads(w: LiveWorker, how: 'released' | 'lost'): void {
    const at = Date.now();
    for (const lead of this.leads) if (lead.worker === w.index && lead.to === undefined) Object.assign(lead, { to: at, how });
  }

  #onMessage(w: LiveWorker, message: WorkerMessage): void {
    switch (message.type) {
      case 'ready':
        w.ready = true;
        break;
      case 'leadership': {
        const { change } = message;
        // A killed worker's last words (sent before the signal landed) change nothing any more.
        if (w.stoppedWith === 'SIGKILL') break;
        const lost = recordLeadership(this.leads, w.index, change);
        if (lost !== undefined && !this.#closing) this.options.log(`  worker ${w.index} LOST the lock of ${change.name} (token ${lost})`);
        this.#announce();
        break;
      }
      case 'stats':
      case 'stopped':
        w.busy = message.busy;
        if (message.type === 'stopped' && !this.#closing) {
          this.options.log(`  worker ${w.index} stopped cleanly in ${message.stopMs} ms: in-flight work finished, checkpoints saved, locks released`);
        }
        break;
      case 'failed':
        this.options.fail(new Error(`worker ${w.index}: ${message.message}`));
        break;
    }
  }

  /** Says each new lead of a runner led whole once its predecessor's end is known; and the partitions' map once it settled. */
  #announce(): void {
    if (this.#closing) return;
    for (const name of this.whole) {
      const chain = this.leads.filter((l) => l.name === name).sort((a, b) => a.token - b.token);
      chain.forEach((lead, i) => {
        const id = `${name}/${lead.token}`;
        const before = chain[i - 1];
        if (this.#announced.has(id) || (before !== undefined && before.to === undefined)) return;
        this.#announced.add(id);
        if (before === undefined) {
          this.options.log(`  worker ${lead.worker} leads ${name} (fencing token ${lead.token}); the others stand by`);
        } else {
          const gapMs = Math.max(0, lead.from - (before.to as number));
          const how = this.workerOf(before)?.stoppedWith === 'SIGKILL' ? 'was killed' : 'let go';
          this.options.log(`  worker ${lead.worker} took over ${name} ${gapMs} ms after worker ${before.worker} ${how} (fencing token ${lead.token})`);
        }
      });
    }
    const { partitions } = this.options;
    if (partitions === undefined) return;
    const owners = partitionOwners(this.leads);
    const map = mapLine(owners);
    if (map !== this.#map && shared(owners, partitions, this.alive.map((w) => w.index))) {
      this.#map = map;
      this.options.log(`  the mailer's ${partitions} partitions: ${map}`);
    }
  }
}
