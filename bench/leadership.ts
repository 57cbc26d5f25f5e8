// The `leadership` group (PostgreSQL): what leader election costs and how fast a standby takes over.
//
// - lock.acquireRelease: PostgresLockRegistry acquire + release beside a raw pg_advisory_lock/unlock pair.
// - leadership.handoff: the leader is a child process (fixtures/leader.ts) whose handler is busy with
//   an event; from telling it to stop() to the standby in this process handling that event.
//   leadership.handoff.appendAfterStop: both nodes in this process, the event appended right after
//   stop() (so the figure also holds that append's commit). Baseline: raw unlock → a waiting raw
//   pg_advisory_lock returns.
// - leadership.failover.kill / .freeze: the leader is a child process (fixtures/leader.ts) killed with
//   SIGKILL or frozen with SIGSTOP; from the signal to the standby's first handled event, every
//   registry at its default settings. Baseline: the same signal to a child holding a raw advisory lock
//   (for the freeze, with the idle_session_timeout the registry sets), until a raw waiter holds it.
import { spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { lockKey, PostgresLockRegistry, PostgresCheckpointStore } from '../src/postgres/index.js';
import type { PostgresEventStore } from '../src/postgres/index.js';
import { Subscription } from '../src/subscription/index.js';
import type { LeaderOptions } from './fixtures/leader.js';
import type { BenchContext, BenchGroup } from './lib/context.js';
import { sequential } from './lib/measure.js';
import { readJsonLines } from './lib/json-lines.js';
import { benchLogger, EVENT, measureLatency, openPostgresBackend, until, within } from './subscription.js';
import type { LatencyRound, PostgresBackend } from './subscription.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/**
 * Milliseconds on CLOCK_MONOTONIC, which every process on the host reads alike: a child's time of an
 * event compares with this process's (performance.now() counts from each process's own start).
 */
function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}
const LEADER = fileURLToPath(new URL('./fixtures/leader.ts', import.meta.url));

const LOCK = 'lock.acquireRelease.postgres';
const HANDOFF = 'leadership.handoff.postgres';
const HANDOFF_APPEND = 'leadership.handoff.postgres.appendAfterStop';
const HANDOFF_EXIT = 'leadership.handoff.postgres.exit';
const KILL = 'leadership.failover.kill.postgres';
const FREEZE = 'leadership.failover.freeze.postgres';

export const leadershipBench: BenchGroup = async (ctx) => {
  const figures: Array<[string, (ctx: BenchContext, backend: PostgresBackend) => Promise<void>]> = [
    [LOCK, lockFigure],
    [HANDOFF, handoffFigure],
    [HANDOFF_EXIT, handoffExitFigure],
    [HANDOFF_APPEND, handoffAppendAfterStopFigure],
    [KILL, (c, b) => failoverFigure(c, b, 'SIGKILL')],
    [FREEZE, (c, b) => failoverFigure(c, b, 'SIGSTOP')],
  ];
  if (!figures.some(([name]) => ctx.selected(name))) return;
  const backend = await openPostgresBackend(ctx, 'lead');
  try {
    for (const [name, run] of figures) {
      if (!ctx.selected(name)) continue;
      try {
        await run(ctx, backend);
      } catch (error) {
        ctx.fail(name, error);
      }
    }
  } finally {
    await backend.close();
  }
};

// ---------------------------------------------------------------------------------------------------
// Raw advisory locks

const rawLock = { name: 'bench_raw_lock', rowMode: 'array' as const, text: 'SELECT pg_advisory_lock($1::bigint)' };
const rawUnlock = { name: 'bench_raw_unlock', rowMode: 'array' as const, text: 'SELECT pg_advisory_unlock($1::bigint)' };

async function backendPid(client: pg.Client): Promise<number> {
  return Number((await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid);
}

/** Waits until the session `pid` is queued for an advisory lock (its pg_advisory_lock is blocked). */
async function untilWaiting(backend: PostgresBackend, pid: number): Promise<void> {
  await until(
    async () => ((await backend.pool.query("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = $1 AND NOT granted", [pid])).rowCount ?? 0) > 0,
    `session ${pid} to wait for the advisory lock`,
    10_000,
  );
}

// ---------------------------------------------------------------------------------------------------
// Nodes in this process

/** A Subscription with its own registry, store and pool: one node. `nextHandled` resolves at its next handled event (monotonicMs). */
interface Node {
  subscription: Subscription;
  store: PostgresEventStore;
  registry: PostgresLockRegistry;
  nextHandled(): Promise<number>;
  position(): Promise<number | undefined>;
  /** Stops the subscription and closes the registry (the backend closes the store). */
  close(): Promise<void>;
}

function openNode(ctx: BenchContext, backend: PostgresBackend, name: string): Node {
  const store: PostgresEventStore = backend.openStore();
  const logger = benchLogger(ctx);
  const registry = new PostgresLockRegistry({ connectionString: backend.connectionString, schema: backend.schema, logger });
  let waiter: ((at: number) => void) | undefined;
  const subscription = new Subscription({
    name,
    store,
    checkpoints: new PostgresCheckpointStore({ store }),
    leaderLock: registry,
    logger,
    handler: () => {
      const at = monotonicMs();
      const resolve = waiter;
      waiter = undefined;
      resolve?.(at);
    },
  });
  const close = ctx.defer(async () => {
    await subscription.stop();
    await registry.close();
  });
  return {
    close,
    subscription,
    store,
    registry,
    nextHandled: () => new Promise<number>((resolve) => (waiter = resolve)),
    position: async () => (await subscription.status()).position,
  };
}

async function untilLeading(node: Node): Promise<void> {
  await until(async () => (await node.subscription.status()).state === 'leading', 'a node to lead', 30_000, 2);
}

/** Denied the lock, and at rest: its store's LISTEN connection is up (a fresh one forks a server process). */
async function untilStandby(node: Node): Promise<void> {
  await until(async () => (await node.subscription.status()).lockDenied && node.store.listening, 'a node to stand by', 30_000, 2);
}

async function untilCheckpointed(node: Node, position: number): Promise<void> {
  await until(async () => ((await node.position()) ?? 0) >= position, `a checkpoint at ${position}`, 30_000, 2);
}

// ---------------------------------------------------------------------------------------------------
// lock.acquireRelease

async function lockFigure(ctx: BenchContext, backend: PostgresBackend): Promise<void> {
  const registry = new PostgresLockRegistry({ connectionString: backend.connectionString, schema: backend.schema, logger: benchLogger(ctx) });
  const closeRegistry = ctx.defer(() => registry.close());
  try {
    const raw = await backend.client();
    const key = lockKey('bench-raw-lock', backend.schema);
    await ctx.measure({
      bench: LOCK,
      unit: 'ops/s',
      ops: ctx.pick(1000, 3000),
      rounds: ctx.pick(3, 7),
      eskit: sequential(async () => {
        const lease = await registry.acquire('bench-lock');
        await lease.release();
        return 1;
      }),
      baseline: sequential(async () => {
        await raw.query({ ...rawLock, values: [key] });
        await raw.query({ ...rawUnlock, values: [key] });
        return 1;
      }),
      baselineLabel: 'pg: pg_advisory_lock + pg_advisory_unlock, dedicated client',
      target: 0.77,
      note: 'op = acquire + release of one free lock; eskit: try-lock + nextval for the token in one statement, then unlock + a try of the waiter key (no waiter, so no NOTIFY)',
    });
  } finally {
    await closeRegistry();
  }
}

// ---------------------------------------------------------------------------------------------------
// leadership.handoff

/**
 * The leader is a child process holding an event in its handler (work in flight when the deploy
 * stops it); the standby is a node in this process. From the child's stop() call (it prints the time
 * on CLOCK_MONOTONIC) to the standby handling the event the old leader gave up.
 */
async function handoffFigure(ctx: BenchContext, backend: PostgresBackend): Promise<void> {
  const name = 'handoff';
  const standby = openNode(ctx, backend, name);
  const writer = backend.openStore();
  const leader = new Leader(ctx, { mode: 'eskit', connectionString: backend.connectionString, schema: backend.schema, name, holdEvents: true });
  try {
    await leader.waitFor((l) => l.ev === 'leading', 'the child to lead');
    await standby.subscription.start();
    await untilStandby(standby);
    let appended = 0;
    const eskit: LatencyRound = async (samples) => {
      const out: number[] = [];
      for (let i = 0; i < samples; i++) {
        // Untimed: an event the leader is busy with.
        let from = leader.lines.length;
        const { position } = await writer.append(`handoff-${appended++}`, [EVENT]);
        await leader.waitFor((l) => l.ev === 'holding' && l.position === position, `the child leader to hold event ${position}`, 30_000, from);
        from = leader.lines.length;
        const handled = standby.nextHandled();
        leader.send('stop');
        const end = await within(handled, 30_000, 'the standby to handle the event the old leader gave up');
        // Untimed: hand leadership back, so that the next sample starts as this one did.
        await leader.waitFor((l) => l.ev === 'stopped', 'the old leader to stop', 30_000, from);
        out.push(end - stoppedAt(leader, from));
        await untilCheckpointed(standby, position);
        from = leader.lines.length;
        leader.send('start');
        await leader.waitFor((l) => l.ev === 'standby', 'the child to stand by', 30_000, from);
        await standby.subscription.stop();
        await leader.waitFor((l) => l.ev === 'claimed', 'the child to lead again', 30_000, from);
        await standby.subscription.start();
        await untilStandby(standby);
      }
      return out;
    };
    await measureLatency(ctx, {
      bench: HANDOFF,
      samples: ctx.pick(5, 10),
      rounds: 4,
      warmupSamples: 2,
      eskit,
      baseline: rawHandoffBaseline(backend, 'bench-raw-handoff'),
      baselineLabel: 'pg: unlock → a blocked pg_advisory_lock returns (two raw clients)',
      targetMs: 5,
      note:
        'the leader (a child process) holds an event in its handler when its stop() is called → the standby in this process handles that event ' +
        '(both times on CLOCK_MONOTONIC); registries at default settings',
    });
  } finally {
    await leader.end();
    await standby.close();
  }
}

/**
 * A deploy: a new leader process per sample, holding an event, is sent SIGTERM (stop, close, exit);
 * from its stop() call to the standby in this process handling that event. The old process's
 * connections close while the standby takes over.
 */
async function handoffExitFigure(ctx: BenchContext, backend: PostgresBackend): Promise<void> {
  const name = 'handoff-exit';
  const standby = openNode(ctx, backend, name);
  const writer = backend.openStore();
  try {
    let appended = 0;
    const eskit: LatencyRound = async (samples) => {
      const out: number[] = [];
      for (let i = 0; i < samples; i++) {
        // Untimed: this node leads, a new process stands by, takes over, and holds the next event.
        await standby.subscription.start();
        await untilLeading(standby);
        const leader = new Leader(ctx, { mode: 'eskit', connectionString: backend.connectionString, schema: backend.schema, name, holdEvents: true });
        try {
          await until(async () => (await backends(backend, 'eskit-bench-leader')) > 0, 'the child to stand by', 30_000, 2);
          await standby.subscription.stop();
          await leader.waitFor((l) => l.ev === 'claimed', 'the child to lead');
          await standby.subscription.start();
          await untilStandby(standby);
          const from = leader.lines.length;
          const { position } = await writer.append(`${name}-${appended++}`, [EVENT]);
          await leader.waitFor((l) => l.ev === 'holding' && l.position === position, `the child leader to hold event ${position}`, 30_000, from);
          const handled = standby.nextHandled();
          leader.signal('SIGTERM');
          const end = await within(handled, 30_000, 'the standby to handle the event the exiting leader gave up');
          await leader.exited;
          out.push(end - stoppedAt(leader, from));
          await untilCheckpointed(standby, position);
        } finally {
          await leader.end();
          await standby.subscription.stop();
        }
      }
      return out;
    };
    await measureLatency(ctx, {
      bench: HANDOFF_EXIT,
      samples: ctx.pick(3, 6),
      rounds: 2,
      warmupSamples: 1,
      eskit,
      baseline: rawHandoffBaseline(backend, 'bench-raw-handoff-exit'),
      baselineLabel: 'pg: unlock → a blocked pg_advisory_lock returns (two raw clients)',
      note: 'a deploy: SIGTERM to the leader process (stop(), close the registry and the store, exit) → the standby in this process handles the event it gave up; from its stop() call; no target',
    });
  } finally {
    await standby.close();
  }
}

/** When the child called stop() (monotonicMs), from its 'stopping' line after index `from`. */
function stoppedAt(leader: Leader, from: number): number {
  const at = Number(leader.lines.slice(from).find((l) => l.ev === 'stopping')?.at);
  if (!Number.isFinite(at)) throw new Error(`the leader printed no stopping time:\n${leader.stderr}`);
  return at;
}

/** Server sessions whose application_name is `name`. */
async function backends(backend: PostgresBackend, name: string): Promise<number> {
  return (await backend.pool.query('SELECT 1 FROM pg_stat_activity WHERE application_name = $1', [name])).rowCount ?? 0;
}

/** Raw unlock → a blocked pg_advisory_lock on another raw client returns, turn and turn about. */
export function rawHandoffBaseline(backend: PostgresBackend, lockName: string): LatencyRound {
  let ready: Promise<{ clients: readonly [pg.Client, pg.Client]; pids: readonly [number, number] }> | undefined;
  const key = lockKey(lockName, backend.schema);
  let holder = 0;
  return async (samples) => {
    ready ??= (async () => {
      const clients = [await backend.client(), await backend.client()] as const;
      const pids = [await backendPid(clients[0]), await backendPid(clients[1])] as const;
      await clients[0].query({ ...rawLock, values: [key] });
      return { clients, pids };
    })();
    const { clients, pids } = await ready;
    const out: number[] = [];
    for (let i = 0; i < samples; i++) {
      const waiter = 1 - holder;
      const granted = (clients[waiter] as pg.Client).query({ ...rawLock, values: [key] }).then(() => performance.now());
      await untilWaiting(backend, pids[waiter] as number);
      const start = performance.now();
      await (clients[holder] as pg.Client).query({ ...rawUnlock, values: [key] });
      out.push((await within(granted, 10_000, 'the raw waiter to get the lock')) - start);
      holder = waiter;
    }
    return out;
  };
}

/**
 * Both nodes in this process, and the event appended right after stop(): the old leader's shutdown,
 * the takeover and the append's own commit share one event loop and two cores, and the first event
 * exists only once that append commits. Kept beside the headline so that cost stays visible.
 */
async function handoffAppendAfterStopFigure(ctx: BenchContext, backend: PostgresBackend): Promise<void> {
  const nodes = [openNode(ctx, backend, 'handoff-append'), openNode(ctx, backend, 'handoff-append')] as const;
  try {
    await handoffAppendAfterStop(ctx, backend, ...nodes);
  } finally {
    await Promise.all(nodes.map((node) => node.close()));
  }
}

async function handoffAppendAfterStop(ctx: BenchContext, backend: PostgresBackend, first: Node, second: Node): Promise<void> {
  const writer = backend.openStore();
  let leader = first;
  let standby = second;
  await leader.subscription.start();
  await untilLeading(leader);
  await standby.subscription.start();
  await untilStandby(standby);

  let appended = 0;
  const eskit: LatencyRound = async (samples) => {
    const out: number[] = [];
    for (let i = 0; i < samples; i++) {
      const handled = standby.nextHandled();
      const start = monotonicMs();
      const stopping = leader.subscription.stop();
      // stop() has aborted the leader synchronously: this event is the standby's to handle.
      const appending = writer.append(`handoff-append-${appended++}`, [EVENT]);
      const end = await within(handled, 30_000, 'the standby to handle its first event');
      out.push(end - start);
      await stopping;
      const { position } = await appending;
      // Untimed: the new leader checkpoints, the old one comes back as its standby.
      await untilCheckpointed(standby, position);
      await leader.subscription.start();
      await untilStandby(leader);
      [leader, standby] = [standby, leader];
    }
    return out;
  };

  await measureLatency(ctx, {
    bench: HANDOFF_APPEND,
    samples: ctx.pick(5, 10),
    rounds: 2,
    warmupSamples: 2,
    eskit,
    baseline: rawHandoffBaseline(backend, 'bench-raw-handoff-append'),
    baselineLabel: 'pg: unlock → a blocked pg_advisory_lock returns (two raw clients)',
    note: 'both nodes in this process; leader stop() called → standby handler runs; the event is appended right after stop(); for comparison, no target',
  });
}

// ---------------------------------------------------------------------------------------------------
// leadership.failover.kill / .freeze

/** A leader child process (fixtures/leader.ts) and the JSON lines it printed. */
class Leader {
  readonly lines: Array<Record<string, unknown>> = [];
  readonly exited: Promise<void>;
  stderr = '';
  readonly #child: ChildProcessWithoutNullStreams;
  #waiters = new Set<() => void>();
  #exited = false;

  constructor(ctx: BenchContext, options: LeaderOptions) {
    this.#child = spawn(process.execPath, ['--import', 'tsx', LEADER, JSON.stringify(options)], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
    this.#child.stderr.setEncoding('utf8');
    readJsonLines(
      this.#child.stdout,
      (line) => this.lines.push(line),
      (text) => (this.stderr += `[stdout] ${text}\n`),
      () => {
        for (const wake of this.#waiters) wake();
      },
    );
    this.#child.stderr.on('data', (chunk: string) => (this.stderr += chunk));
    this.exited = new Promise((resolve) =>
      this.#child.once('close', () => {
        this.#exited = true;
        for (const wake of this.#waiters) wake();
        resolve();
      }),
    );
    const end = ctx.defer(() => this.end());
    void this.exited.then(end);
  }

  /** Waits for a line matching `predicate` among the lines from index `from` on. */
  async waitFor(predicate: (line: Record<string, unknown>) => boolean, what: string, timeoutMs = 30_000, from = 0): Promise<void> {
    const found = (): boolean => {
      for (let i = from; i < this.lines.length; i++) if (predicate(this.lines[i] as Record<string, unknown>)) return true;
      return false;
    };
    const wait = (async () => {
      while (!found()) {
        if (this.#exited) throw new Error(`the leader process exited before ${what}:\n${this.stderr}`);
        await new Promise<void>((resolve) => {
          const wake = (): void => {
            this.#waiters.delete(wake);
            resolve();
          };
          this.#waiters.add(wake);
        });
      }
    })();
    await within(wait, timeoutMs, `${what} (leader output: ${this.stderr.slice(-2000)})`);
  }

  signal(signal: NodeJS.Signals): void {
    if (!this.#exited) this.#child.kill(signal);
  }

  /** A command for fixtures/leader.ts ('stop', 'start'). */
  send(command: string): void {
    this.#child.stdin.write(`${command}\n`);
  }

  /** SIGCONT for a frozen one, then SIGKILL; resolves once it has exited. */
  async end(): Promise<void> {
    this.signal('SIGCONT');
    this.signal('SIGKILL');
    await this.exited;
  }
}

async function failoverFigure(ctx: BenchContext, backend: PostgresBackend, how: 'SIGKILL' | 'SIGSTOP'): Promise<void> {
  const name = how === 'SIGKILL' ? 'failover-kill' : 'failover-freeze';
  const standby = openNode(ctx, backend, name);
  try {
    await failover(ctx, backend, how, name, standby);
  } finally {
    await standby.close();
  }
}

async function failover(ctx: BenchContext, backend: PostgresBackend, how: 'SIGKILL' | 'SIGSTOP', name: string, standby: Node): Promise<void> {
  const bench = how === 'SIGKILL' ? KILL : FREEZE;
  const writer = backend.openStore();
  let appended = 0;
  const timeoutMs = how === 'SIGKILL' ? 30_000 : 120_000;

  const eskit: LatencyRound = async (samples) => {
    const out: number[] = [];
    for (let i = 0; i < samples; i++) {
      const head = await writer.headPosition();
      const leader = new Leader(ctx, { mode: 'eskit', connectionString: backend.connectionString, schema: backend.schema, name });
      try {
        await leader.waitFor((l) => l.ev === 'leading', 'the child to lead');
        await leader.waitFor((l) => (l.ev === 'claimed' || l.ev === 'saved') && Number(l.position) >= head, `the child to checkpoint ${head}`);
        await standby.subscription.start();
        await untilStandby(standby);
        const handled = standby.nextHandled();
        const start = monotonicMs();
        leader.signal(how);
        const appending = writer.append(`${name}-${appended++}`, [EVENT]);
        out.push((await within(handled, timeoutMs, `the standby to take over after ${how}`)) - start);
        const { position } = await appending;
        await untilCheckpointed(standby, position);
      } finally {
        await leader.end();
        await standby.subscription.stop();
      }
    }
    return out;
  };

  const waiter = await backend.client();
  const waiterPid = await backendPid(waiter);
  const key = lockKey(`bench-raw-${name}`, backend.schema);
  // What the registry asks of the server for its own lock session.
  const idleSessionTimeoutMs = how === 'SIGSTOP' ? standby.registry.sessionTimeoutMs : undefined;
  const baseline: LatencyRound = async (samples) => {
    const out: number[] = [];
    for (let i = 0; i < samples; i++) {
      const leader = new Leader(ctx, { mode: 'raw', connectionString: backend.connectionString, schema: backend.schema, key, idleSessionTimeoutMs });
      try {
        await leader.waitFor((l) => l.ev === 'locked', 'the raw child to lock');
        const granted = waiter.query({ ...rawLock, values: [key] }).then(() => performance.now());
        await untilWaiting(backend, waiterPid);
        const start = performance.now();
        leader.signal(how);
        out.push((await within(granted, timeoutMs, `the raw waiter to get the lock after ${how}`)) - start);
        await waiter.query({ ...rawUnlock, values: [key] });
      } finally {
        await leader.end();
      }
    }
    return out;
  };

  const kill = how === 'SIGKILL';
  await measureLatency(ctx, {
    bench,
    samples: 1,
    rounds: kill ? ctx.pick(3, 5) : ctx.pick(1, 2),
    warmupSamples: 0,
    eskit,
    baseline,
    baselineLabel: kill
      ? 'pg: SIGKILL of a raw lock holder → blocked pg_advisory_lock returns'
      : `pg: SIGSTOP of a raw lock holder with idle_session_timeout ${idleSessionTimeoutMs} ms → blocked pg_advisory_lock returns`,
    targetMs: kill ? 1000 : 6_000,
    note: kill
      ? `${how} of the leader process → the standby's first handled event; default settings. The signal comes right after the standby's ` +
        `first denied try, so it waits out nearly a whole lock poll (${standby.registry.pollIntervalMs} ms): close to the worst case`
      : `${how} of the leader process → the standby's first handled event; default settings (sessionTimeoutMs ${standby.registry.sessionTimeoutMs}, ` +
        `poll ${standby.registry.pollIntervalMs} ms). Frozen just after its lock round trip: close to the worst case (a freeze later in a heartbeat ` +
        'period is freed up to sessionTimeoutMs/4 sooner). A raw session lock without a timeout is never freed',
  });
}
