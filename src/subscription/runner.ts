import type { Attributes } from '@opentelemetry/api';
import type { CheckpointStore } from '../core/checkpoint.js';

import { AlreadyStartedError, describeError, ErrorCode, isEskitError, TimeoutError } from '../core/errors.js';
import type { FencedError } from '../core/errors.js';
import type { EventShape, Recorded } from '../core/event.js';
import type { Lease, LockRegistry } from '../core/lock.js';
import { consoleLogger } from '../core/logger.js';
import type { Logger } from '../core/logger.js';
import { delay, retryPolicy } from '../core/retry.js';
import type { RetryPolicy } from '../core/retry.js';
import { checkCategory, type EventStore } from '../core/store.js';
import { milliseconds, positiveInteger } from '../core/validate.js';
import { TelemetryAttribute, instruments, reportLag } from '../telemetry/telemetry.js';
import { Checkpointer, loadStart } from './checkpointing.js';
import { Delivery } from './delivery.js';
import { Leadership } from './leadership.js';
import { subscriptionParts } from './parts.js';
import { LogReader } from './reading.js';
import type { EventSource } from './reading.js';
import { drainWork, finishWork } from './outstanding.js';
import { runnerPublisher } from './status-publisher.js';
import type { StatusPublisher } from './status-publisher.js';
import type { StoppingWork } from './outstanding.js';
import type { Batch } from './reading.js';
import type { EngineHooks, SubscriptionOptions, SubscriptionState, SubscriptionStatus } from './types.js';

const defaultRetry: RetryPolicy = { maxAttempts: 5, initialDelayMs: 100, maxDelayMs: 10_000 };

/** Why a leading period ended. */
type LeadOutcome = 'stopped' | 'lost';

/**
 * One lane of a subscription (the whole of it, or one partition): catches up from its checkpoint,
 * then follows live appends. Delivers events in global order, at least once; saves the checkpoint
 * only after the handler succeeded for everything before it. With `leaderLock`, exactly one node
 * runs it, and every checkpoint write is fenced by the lease's token. `Subscription` is its face.
 */
export class SubscriptionRunner<E extends EventShape = EventShape> {
  readonly name: string;
  readonly #options: SubscriptionOptions<E>;
  readonly #engine: EngineHooks<E>;
  readonly #store: EventStore<E>;
  readonly #checkpoints: CheckpointStore;
  readonly #retry: RetryPolicy;
  readonly #checkpointIntervalMs: number;
  readonly #pollIntervalMs: number;
  readonly #drainTimeoutMs: number;
  readonly #stopCallTimeoutMs: number;
  readonly #logger: Logger;

  #state: SubscriptionState = 'idle';
  #position: number | undefined;
  #fencingToken: number | undefined;
  #error: Error | undefined;
  #run: Promise<void> | undefined;
  #done: Promise<void> = Promise.resolve();
  #stop = new AbortController();
  /** Fires `drainTimeoutMs` after stop(): work still in flight is abandoned. */
  #drainExpired = new AbortController();
  #drainTimer: NodeJS.Timeout | undefined;
  /** Metric attributes, made once: metrics are recorded per batch or per rare event with them. */
  readonly #attributes: Attributes;
  readonly #leadership: Leadership;
  readonly #reader: EventSource<E>;
  readonly #leaderLockOf: LockRegistry | undefined;
  #publisher: StatusPublisher | undefined;
  readonly #delivery: Delivery<E>;

  /** `engine`: what an automation or a view passes (see EngineHooks); applications leave it out. */
  constructor(options: SubscriptionOptions<E>, engine: EngineHooks<E> = {}) {
    const { store, checkpoints, leaderLock } = subscriptionParts(options);
    this.name = options.name;
    this.#options = options;
    this.#engine = engine;
    this.#store = store;
    this.#checkpoints = checkpoints;
    this.#retry = retryPolicy(options.retry, defaultRetry);
    this.#checkpointIntervalMs = milliseconds('checkpointIntervalMs', options.checkpointIntervalMs ?? 250, 0);
    this.#pollIntervalMs = milliseconds('pollIntervalMs', options.pollIntervalMs ?? 500);
    this.#drainTimeoutMs = milliseconds('drainTimeoutMs', options.drainTimeoutMs ?? 10_000);
    this.#stopCallTimeoutMs = milliseconds('stopCallTimeoutMs', options.stopCallTimeoutMs ?? 2_000);
    this.#logger = options.logger ?? consoleLogger();
    this.#attributes = Object.freeze({ [TelemetryAttribute.Subscription]: this.name });
    this.#leaderLockOf = leaderLock;
    this.#leadership = new Leadership({
      name: this.name,
      registry: leaderLock,
      onChange: () => this.#publisher?.changed(),
      stopCallTimeoutMs: this.#stopCallTimeoutMs,
      attributes: this.#attributes,
      logger: this.#logger,
      routineStandby: engine.routineStandby,
    });
    const batchSize = positiveInteger('batchSize', options.batchSize ?? 500);
    checkCategory(options.category);
    // A partition's events come from its node's shared reader instead.
    this.#reader = engine.source ?? new LogReader<E>({ name: this.name, store, batchSize, types: options.types, category: options.category, pollIntervalMs: this.#pollIntervalMs, logger: this.#logger });
    this.#delivery = new Delivery<E>({
      name: this.name,
      handler: options.handler,
      batchHandler: options.batchHandler,
      handlerThis: options,
      onHandlerFailure: options.onHandlerFailure,
      deadLetters: options.deadLetters,
      retry: this.#retry,
      pollIntervalMs: this.#pollIntervalMs,
      drainTimeoutMs: this.#drainTimeoutMs,
      drainExpired: () => this.#drainExpired.signal,
      attributes: this.#attributes,
      logger: this.#logger,
    });
  }

  /**
   * Starts in the background: leading at once without a lock, else standing by until the lock is free.
   * Resolves once started; `done` tells how the run ends.
   */
  async start(): Promise<void> {
    if (this.#run) throw new AlreadyStartedError(`Subscription "${this.name}"`);
    this.#stop = new AbortController();
    this.#drainExpired = new AbortController();
    this.#error = undefined;
    this.#setState('standby');
    this.#publisher = this.#statusPublisher();
    // A partition's lane standing by is routine and short-lived: its row starts when it first leads
    // (a node stands by for every partition it lacks; their rows were most of a rebalance's writes).
    if (!this.#engine.routineStandby) this.#publisher?.start();
    const run = this.#loop();
    this.#run = run.then(() => undefined);
    this.#done = run.then((failure) => {
      if (failure) throw failure;
    });
  }

  /**
   * How the run started last ends: resolves when it stops (`stop()`), rejects with the error when it
   * fails for good (a handler that keeps failing without dead letters, an event that cannot be read, a
   * store that was closed). Await or catch it: a failure nobody handles is an unhandled rejection, which
   * ends the process with a non-zero exit code, so that a runner that stopped working is never silent.
   * (`whenStopped()` handles it too: it resolves with the status, whose `error` says why.)
   */
  get done(): Promise<void> {
    return this.#done;
  }

  /**
   * Lets the work in flight finish (for up to `drainTimeoutMs`, then abandons it), saves the
   * checkpoint, releases leadership. Safe to call twice; resolves when all of that is done or given
   * up, within about `drainTimeoutMs` + 3 × `stopCallTimeoutMs` even when the database stopped answering.
   */
  async stop(): Promise<void> {
    const run = this.#run;
    if (!run) return;
    if (!this.#stop.signal.aborted) {
      this.#stop.abort();
      this.#publisher?.changed();
      const expired = this.#drainExpired;
      this.#drainTimer = setTimeout(() => {
        expired.abort(new TimeoutError(`Subscription "${this.name}": the work in flight at stop()`, this.#drainTimeoutMs));
      }, this.#drainTimeoutMs);
    }
    await run;
  }

  /** Resolves when the subscription has stopped or failed (the status says which, and handles `done`). */
  async whenStopped(): Promise<SubscriptionStatus> {
    this.#done.catch(() => undefined);
    await this.#run;
    return this.status();
  }

  async status(): Promise<SubscriptionStatus> {
    const head = await this.#store.headPosition();
    return {
      name: this.name,
      state: this.#state,
      position: this.#position,
      head,
      lag: Math.max(0, head - (this.#position ?? 0)),
      fencingToken: this.#fencingToken,
      lockDenied: this.#leadership.denied,
      handled: this.#delivery.handled,
      error: this.#error,
    };
  }

  /** Runs until stopped or failed; resolves with the failure, if any. */
  async #loop(): Promise<Error | undefined> {
    const unsubscribe = this.#reader.open();
    const stopReporting = reportLag({ attributes: this.#attributes, lag: () => this.#lag() });
    try {
      // Leaderships in a row that were fenced (a write rejected while the lease still held, or without
      // a lease at all) before handling anything. One is normal (a view rebuilt under this node, a
      // checkpoint reset): lead again at once from the new checkpoint. Two mean the next leadership
      // would be fenced too, and the lock comes straight back: without a pause that loop would spin
      // (on the memory registry in microtasks alone, so that no timer, not even a stop(), ever ran).
      let fencedInARow = 0;
      const prepared = this.#engine.prepare ? await this.#engine.prepare(this.#stop.signal) : true;
      while (prepared && !this.#stop.signal.aborted) {
        if (fencedInARow >= 2) {
          await delay(this.#pollIntervalMs, this.#stop.signal).catch(() => undefined);
          if (this.#stop.signal.aborted) break;
        }
        const lease = await this.#leadership.acquire(this.#stop.signal);
        if (!lease.ok) break;
        const handledBefore = this.#delivery.handled;
        let outcome: LeadOutcome;
        try {
          outcome = await this.#lead(lease.lease);
          const fenced = outcome === 'lost' && lease.lease?.signal.aborted !== true;
          fencedInARow = !fenced ? 0 : this.#delivery.handled > handledBefore ? 1 : fencedInARow + 1;
        } finally {
          this.#fencingToken = undefined;
          await this.#leadership.release(lease.lease);
        }
        if (outcome === 'stopped') break;
        this.#setState('standby');
        this.#publisher?.changed();
      }
      this.#setState('stopped');
      return undefined;
    } catch (error) {
      this.#setState('failed');
      this.#error = error instanceof Error ? error : new Error(describeError(error), { cause: error });
      this.#logger.error({ subscription: this.name, err: this.#error }, `Subscription "${this.name}" failed`);
      return this.#error;
    } finally {
      clearTimeout(this.#drainTimer);
      stopReporting();
      unsubscribe();
      this.#leadership.ended();
      await this.#publisher?.stop();
      this.#run = undefined;
      this.#engine.onEnded?.();
    }
  }

  /** What the run is doing now (status() says it with positions, for a price). */
  get state(): SubscriptionState {
    return this.#state;
  }

  #setState(state: SubscriptionState): void {
    if (state === this.#state) return;
    this.#state = state;
    if (state === 'leading') this.#publisher?.start();
    this.#engine.onStateChange?.(state);
  }

  /** For the lag gauge: only the leader reports, so that standbys do not add stale values. */
  async #lag(): Promise<number | undefined> {
    if (this.#state !== 'leading') return undefined;
    const head = await this.#store.headPosition();
    return Math.max(0, head - (this.#position ?? 0));
  }

  /** Processes events while this node leads. Throws only for failures that must stop the subscription. */
  async #lead(lease: Lease | undefined): Promise<LeadOutcome> {
    const work = this.#engine.outstandingWork;
    const token = lease?.fencingToken;
    // Leadership ends when the lease is lost, or when a write of this leadership is fenced (a checkpoint
    // save, a handler, outstanding work downstream): a newer token exists somewhere.
    const fencedHere = new AbortController();
    const ended = lease ? AbortSignal.any([lease.signal, fencedHere.signal]) : fencedHere.signal;
    const signal = AbortSignal.any([this.#stop.signal, ended]);
    const lost = (): boolean => ended.aborted;
    const fence = (error: FencedError): void => {
      if (!fencedHere.signal.aborted) fencedHere.abort(error);
    };

    const common = { name: this.name, checkpoints: this.#checkpoints, retry: this.#retry, pollIntervalMs: this.#pollIntervalMs, logger: this.#logger };
    const start = await loadStart({ ...common, store: this.#store, startFrom: this.#options.startFrom }, token, signal);
    if (start === 'stopped') return lost() ? this.#lostLeadership(ended.reason) : 'stopped';
    if (typeof start !== 'number') return this.#lostLeadership(start.fenced);

    // Every event up to `read` has been handed to the handler. The checkpoint may move to `read`,
    // except past outstanding work. Both are read in one synchronous step, so no work can slip in
    // between (the race the Go original fixed by ordering two reads).
    let read = start;
    // The last of its own events handed over (handled or skipped); beyond it, `read` only passed over
    // other partitions' events, saved at most every `passOverIntervalMs` (and at stop).
    let ownRead = start;
    const passOverIntervalMs = this.#engine.eagerPassOver ? this.#checkpointIntervalMs : Math.max(1_000, 10 * this.#checkpointIntervalMs);
    const checkpoint = new Checkpointer({
      ...common,
      fencingToken: token,
      position: start,
      target: () => {
        const earliest = work?.earliestPending();
        return earliest === undefined ? read : Math.min(read, earliest - 1);
      },
      lost,
      stopSignal: this.#stop.signal,
      stopCallTimeoutMs: this.#stopCallTimeoutMs,
      onSaved: (position) => {
        this.#position = position;
        work?.checkpointed?.(position);
      },
      onFenced: fence,
    });
    this.#position = start;
    this.#fencingToken = token;
    this.#setState('leading');
    this.#publisher?.changed();
    await work?.begin({
      position: start,
      fencingToken: token,
      signal,
      fenced: fence,
      saveCheckpoint: async () => {
        await checkpoint.save();
      },
    });

    // Finished work only moves the checkpoint: coalesce bursts of completions into one wake-up (each
    // wake-up may save, and a save is a durable commit).
    let progressTimer: NodeJS.Timeout | undefined;
    const stopProgress = work?.onProgress(() => {
      progressTimer ??= setTimeout(() => {
        progressTimer = undefined;
        this.#reader.wake();
      }, Math.min(this.#checkpointIntervalMs, 10));
    });

    // Boxed: a failure may be any thrown value, undefined included.
    let failure: { error: unknown } | undefined;
    try {
      while (!signal.aborted && failure === undefined) {
        this.#reader.awake();
        let page: Batch<E> | undefined;
        try {
          page = await this.#reader.readBatch(read, signal);
        } catch (error) {
          // An event that cannot be read (corrupt, unknown type): stop, but through the same exit as
          // any failure, so outstanding work is settled and the checkpoint saved up to it.
          failure = { error };
          break;
        }
        if (page === undefined) continue;
        const batch = page.events;
        if (batch.length === 0 && page.through > read) {
          // Only other partitions' events: nothing to handle, and the checkpoint may pass them.
          read = page.through;
          if (checkpoint.due(passOverIntervalMs)) await checkpoint.save();
          continue;
        }
        if (batch.length === 0) {
          // Once per idle poll: registers the lag gauge with a meter provider installed after start().
          instruments();
          // Caught up. Past its own last event, a partition has only passed over the others' events:
          // saving that at every wake-up would be one write per partition per append.
          if (this.#engine.eagerPassOver || ownRead > checkpoint.saved || checkpoint.due(passOverIntervalMs)) await checkpoint.save();
          if (lost()) break;
          await this.#reader.idle(signal);
          continue;
        }
        const handledBefore = this.#delivery.handled;
        const result = await this.#delivery.deliver(batch, token, signal, {
          handled: (position) => {
            read = ownRead = position;
            if (this.#engine.checkpointsInHandler) checkpoint.savedByHandler(position);
          },
          skipped: (position) => {
            read = ownRead = position;
          },
        });
        // Everything was handed over: the checkpoint may also pass the other partitions' events after it.
        if (result === undefined && read === (batch[batch.length - 1] as Recorded<E>).position) read = Math.max(read, page.through);
        if (this.#delivery.handled > handledBefore) this.#publisher?.handled(read, this.#delivery.handled - handledBefore);
        if (result !== undefined) {
          if (isEskitError(result.error, ErrorCode.Fenced)) fence(result.error as FencedError);
          else failure = result;
        }
        if (lost()) break;
        // Catching up: save on a timer, not per batch (a save is a durable commit). Failures, stops
        // and the end of the backlog (the empty read above) always save.
        if (failure === undefined && !checkpoint.due(this.#checkpointIntervalMs)) continue;
        await checkpoint.save();
      }
    } catch (error) {
      // A save that fails for good, or a failure action that throws: the same exit as any failure,
      // so that outstanding work is ended (else it would go on running without the lease).
      failure = { error };
    } finally {
      stopProgress?.();
      clearTimeout(progressTimer);
    }

    if (lost()) {
      await work?.end('lost');
      return this.#lostLeadership(ended.reason);
    }
    // Stopping or failing: let outstanding work settle, then save the checkpoint and record what the
    // work finished.
    if (work) await drainWork(work, ended, this.#stopping());
    let fenced: FencedError | undefined;
    try {
      fenced = lost() ? undefined : await checkpoint.save();
    } catch (error) {
      // After a failure, the save failing too is its echo: the first failure is the one to report.
      if (failure === undefined) throw error;
    } finally {
      if (work) await finishWork(work, this.#stopping());
    }
    if (fenced) return this.#lostLeadership(fenced);
    if (failure !== undefined) throw failure.error;
    return lost() ? this.#lostLeadership(ended.reason) : 'stopped';
  }

  /** A status row for this run in the backend (`eskit status`), when there is a backend to write it to. */
  #statusPublisher(): StatusPublisher | undefined {
    return runnerPublisher({
      runners: this.#options.backend?.admin?.runners ?? this.#engine.statusStore,
      name: this.name,
      kind: this.#engine.kind ?? 'subscription',
      leaderLock: this.#leaderLockOf,
      heartbeatMs: this.#options.statusHeartbeatMs,
      stopTimeoutMs: this.#stopCallTimeoutMs,
      logger: this.#logger,
      run: () => ({
        state: this.#state,
        stopping: this.#stop.signal.aborted,
        denied: this.#leadership.denied,
        fencingToken: this.#fencingToken,
        position: this.#position,
        work: this.#engine.work?.(),
        error: this.#error,
      }),
    });
  }

  /** What the outstanding work's end at a stop needs. */
  #stopping(): StoppingWork {
    return {
      name: this.name,
      drainExpired: this.#drainExpired.signal,
      drainTimeoutMs: this.#drainTimeoutMs,
      stopCallTimeoutMs: this.#stopCallTimeoutMs,
      attributes: this.#attributes,
      logger: this.#logger,
    };
  }

  #lostLeadership(reason: unknown): LeadOutcome {
    this.#leadership.lost(reason, this.#stop.signal.aborted);
    return this.#stop.signal.aborted ? 'stopped' : 'lost';
  }

}
