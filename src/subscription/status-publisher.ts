import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { describeError } from '../core/errors.js';
import { silentLogger } from '../core/logger.js';
import type { LockRegistry } from '../core/lock.js';
import type { Logger } from '../core/logger.js';
import type { RunnerKind, RunnerRole, RunnerState, RunnerStatusStore, RunnerStatusUpdate, RunnerWork } from '../core/runner-status.js';
import { milliseconds } from '../core/validate.js';

/** What the runner is doing now, read by the publisher at every write. */
export interface StatusSnapshot {
  state: RunnerState;
  role: RunnerRole;
  fencingToken: number | undefined;
  /** The checkpoint it last saved or claimed. */
  position: number | undefined;
  /** Automations: the to-do list. */
  work?: RunnerWork;
  /** The error that failed it, or the last one worth showing. */
  lastError?: string;
}

export interface StatusPublisherOptions {
  store: RunnerStatusStore;
  name: string;
  kind: RunnerKind;
  /** Read at every write. A throw is logged like a failed write (and that write skipped). */
  snapshot: () => StatusSnapshot;
  /**
   * Which process this is. Default `<host>/<pid>/<random>`, the same for every publisher of this
   * process, with `#2`, `#3`... for a second and third live publisher of the same name (tests that run
   * several nodes in one process).
   */
  nodeId?: string;
  /** How often the row is rewritten when nothing changes. Readers call it stale after 3 of these. Default 5000. */
  heartbeatMs?: number;
  /** Rows (of any runner) not written for this long are removed when this publisher starts. Default 1 hour. */
  retentionMs?: number;
  /** The longest stop() waits for the write in flight and the final one. Default 2000. */
  stopTimeoutMs?: number;
  logger?: Logger;
}

const PROCESS_NODE = `${hostname()}/${process.pid}/${randomUUID().slice(0, 8)}`;
/** Node ids of live publishers, by runner name: two of one name in one process must not share a row. */
const live = new Map<string, Set<string>>();

function claimNodeId(name: string, given: string | undefined): string {
  const taken = live.get(name) ?? new Set<string>();
  live.set(name, taken);
  let id = given ?? PROCESS_NODE;
  for (let n = 2; given === undefined && taken.has(id); n++) id = `${PROCESS_NODE}#${n}`;
  taken.add(id);
  return id;
}

function releaseNodeId(name: string, id: string): void {
  const taken = live.get(name);
  taken?.delete(id);
  if (taken?.size === 0) live.delete(name);
}

/** When each store was last pruned by this process (performance.now()). */
const lastPruned = new WeakMap<RunnerStatusStore, number>();
/** One prune per store per process and minute is plenty: rows are kept for an hour by default. */
const PRUNE_EVERY_MS = 60_000;

/** True when this process has not pruned `store` in the last minute (a partitioned runner starts many publishers at once). */
function pruneDue(store: RunnerStatusStore): boolean {
  const last = lastPruned.get(store);
  const now = performance.now();
  if (last !== undefined && now - last < PRUNE_EVERY_MS) return false;
  lastPruned.set(store, now);
  return true;
}

/**
 * Keeps a runner's status row current: a write when it starts, when it calls `changed()`, and on a
 * heartbeat, one write at a time (changes during a write become one more write after it). A failed
 * write is logged, never thrown: the status is a window for operators, and the runner's work must not
 * depend on it. `stop()` writes the final row (stopped, or failed) within a bound.
 */
export class StatusPublisher {
  readonly name: string;
  readonly kind: RunnerKind;
  readonly nodeId: string;
  readonly #store: RunnerStatusStore;
  readonly #snapshot: () => StatusSnapshot;
  readonly #heartbeatMs: number;
  readonly #retentionMs: number;
  readonly #stopTimeoutMs: number;
  readonly #logger: Logger;
  #handled = 0;
  #last: { position: number; at: number } | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** The writes in progress: one loop at a time, which writes again while `#dirty`. */
  #pump: Promise<void> | undefined;
  #dirty = false;
  #pruneDue = false;
  #started = false;
  #stopped = false;
  #stopping: Promise<void> | undefined;
  #failing = false;

  constructor(options: StatusPublisherOptions) {
    this.name = options.name;
    this.kind = options.kind;
    this.#store = options.store;
    this.#snapshot = options.snapshot;
    this.#heartbeatMs = milliseconds('heartbeatMs', options.heartbeatMs ?? 5000, 1);
    this.#retentionMs = milliseconds('retentionMs', options.retentionMs ?? 3_600_000, 0);
    this.#stopTimeoutMs = milliseconds('stopTimeoutMs', options.stopTimeoutMs ?? 2000, 0);
    this.#logger = options.logger ?? silentLogger;
    this.nodeId = claimNodeId(this.name, options.nodeId);
  }

  /** Removes rows past the retention once, writes the row, and starts the heartbeat. Safe to call twice. */
  start(): void {
    if (this.#started || this.#stopped) return;
    this.#started = true;
    this.#pruneDue = true;
    this.changed();
  }

  /** The state, role, token or position changed: write now, or right after the write in flight. */
  changed(): void {
    if (!this.#started || this.#stopped) return;
    this.#dirty = true;
    this.#pump ??= this.#run();
  }

  /** Events were handled, the last at `position` (kept in memory; the next write carries it). */
  handled(position: number, count = 1): void {
    this.#handled += count;
    this.#last = { position, at: performance.now() };
  }

  /** Resolves once every write asked for so far was tried. */
  async flush(): Promise<void> {
    while (this.#pump !== undefined) await this.#pump;
  }

  /**
   * Stops the heartbeat and writes the final row: state 'failed' when the snapshot says so, else
   * 'stopped', role 'none'. Waits at most `stopTimeoutMs` for it (a database that does not answer must
   * not hold the runner's stop); never rejects. Safe to call twice.
   */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    const wasRunning = this.#started && !this.#stopped;
    this.#stopped = true;
    clearTimeout(this.#timer);
    releaseNodeId(this.name, this.nodeId);
    if (!wasRunning) return;
    // After the write in flight, so that a late heartbeat cannot land over the final row.
    const final = (this.#pump ?? Promise.resolve()).then(() =>
      this.#attempt('write the final status row', async () => {
        const update = this.#update();
        await this.#store.publish({ ...update, state: update.state === 'failed' ? 'failed' : 'stopped', role: 'none' });
      }),
    );
    let timer: ReturnType<typeof setTimeout> | undefined;
    // Not unref'd: whoever awaits stop() must get past it even when nothing else keeps the process alive.
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, this.#stopTimeoutMs)));
    await Promise.race([final, timeout]);
    clearTimeout(timer);
  }

  async #run(): Promise<void> {
    try {
      if (this.#pruneDue) {
        this.#pruneDue = false;
        if (pruneDue(this.#store)) await this.#attempt('remove old status rows', async () => void (await this.#store.prune(this.#retentionMs)));
      }
      while (this.#dirty && !this.#stopped) {
        this.#dirty = false;
        await this.#attempt('publish the status row', () => this.#store.publish(this.#update()));
      }
    } finally {
      this.#pump = undefined;
      if (!this.#stopped) {
        clearTimeout(this.#timer);
        this.#timer = setTimeout(() => this.changed(), this.#heartbeatMs);
        // A heartbeat must not keep the process alive once everything else has ended.
        this.#timer.unref();
      }
    }
  }

  /** Runs one write; a failure is logged (one warning per outage), never thrown. */
  async #attempt(what: string, write: () => Promise<void>): Promise<void> {
    try {
      await write();
    } catch (error) {
      const level = this.#failing ? 'debug' : 'warn';
      this.#failing = true;
      this.#logger[level](
        { runner: this.name, node: this.nodeId, err: error },
        `Could not ${what} of "${this.name}" (${describeError(error)}); operators may see it as stale. Trying again at the next heartbeat.`,
      );
      return;
    }
    if (this.#failing) this.#logger.info({ runner: this.name, node: this.nodeId }, `The status row of "${this.name}" is published again`);
    this.#failing = false;
  }

  #update(): RunnerStatusUpdate {
    const snapshot = this.#snapshot();
    const last = this.#last;
    return {
      name: this.name,
      kind: this.kind,
      nodeId: this.nodeId,
      state: snapshot.state,
      role: snapshot.role,
      fencingToken: snapshot.fencingToken,
      position: snapshot.position,
      handled: this.#handled,
      lastEvent: last && { position: last.position, ageMs: Math.max(0, performance.now() - last.at) },
      work: snapshot.work,
      lastError: snapshot.lastError,
      heartbeatMs: this.#heartbeatMs,
    };
  }
}

/** What a subscription is doing, as its status row says it: state from its run, role from its leadership. */
export function runnerSnapshot(run: {
  state: 'idle' | 'standby' | 'leading' | 'stopped' | 'failed';
  /** stop() was called. */
  stopping: boolean;
  /** Waiting for a lock another node holds. */
  denied: boolean;
  fencingToken: number | undefined;
  position: number | undefined;
  work: RunnerWork | undefined;
  error: Error | undefined;
}): StatusSnapshot {
  const role: RunnerRole =
    run.state === 'leading'
      ? run.fencingToken === undefined
        ? 'unelected'
        : 'leader'
      : run.denied
        ? 'denied-standby'
        : run.state === 'standby'
          ? 'standby'
          : 'none';
  return {
    state: run.state === 'failed' ? 'failed' : run.stopping ? 'stopping' : 'running',
    role,
    fencingToken: run.fencingToken,
    position: run.position,
    work: run.work,
    lastError: run.error?.message,
  };
}

/** A runner's status publisher, when there is a store to write its row to (a backend's, or a view host's). */
export function runnerPublisher(o: {
  runners: RunnerStatusStore | undefined;
  name: string;
  kind: RunnerKind;
  /** Names the node in the row by its `holderId`, when it has one. */
  leaderLock: LockRegistry | undefined;
  heartbeatMs: number | undefined;
  stopTimeoutMs: number;
  logger: Logger;
  run: () => Parameters<typeof runnerSnapshot>[0];
}): StatusPublisher | undefined {
  if (!o.runners) return undefined;
  const holder = o.leaderLock?.holderId;
  return new StatusPublisher({
    store: o.runners,
    name: o.name,
    kind: o.kind,
    nodeId: typeof holder === 'string' ? holder : undefined,
    heartbeatMs: o.heartbeatMs,
    stopTimeoutMs: o.stopTimeoutMs,
    logger: o.logger,
    snapshot: () => runnerSnapshot(o.run()),
  });
}
