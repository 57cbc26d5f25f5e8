import type { Attributes, Span } from '@opentelemetry/api';
import { milliseconds, positiveInteger } from '../core/validate.js';
import { deadLetterFor } from '../core/dead-letter-checks.js';
import { addDeadLetter } from '../core/storable-letter.js';
import type { DeadLetterStore } from '../core/dead-letter.js';
import { unlessAborted, within } from '../core/deadline.js';
import { AlreadyStartedError, describeError, ErrorCode, HandlerFailedError, InvalidArgumentError, isEskitError, TimeoutError } from '../core/errors.js';
import type { FencedError } from '../core/errors.js';
import type { EventShape, Recorded } from '../core/event.js';
import type { CheckpointStore } from '../core/checkpoint.js';
import type { Lease, LockRegistry } from '../core/lock.js';
import type { EventStore } from '../core/store.js';
import { consoleLogger } from '../core/logger.js';
import type { Logger } from '../core/logger.js';
import { backoffDelay, delay, retryPolicy } from '../core/retry.js';
import type { RetryPolicy } from '../core/retry.js';
import { SpanName, TelemetryAttribute, activeTracer, callInSpan, failSpan, instruments, linksToEvents, recordFailure, reportLag } from '../telemetry/telemetry.js';
import { Checkpointer, isTransient } from './checkpointing.js';
import type {
  BatchHandler,
  EngineHooks,
  FailureAction,
  HandlerContext,
  OutstandingWork,
  SubscriptionHandler,
  SubscriptionOptions,
  SubscriptionState,
  SubscriptionStatus,
} from './types.js';

export type * from './types.js';

const defaultRetry: RetryPolicy = { maxAttempts: 5, initialDelayMs: 100, maxDelayMs: 10_000 };

/** Why a leading period ended. */
type LeadOutcome = 'stopped' | 'lost';

/**
 * A durable, checkpointed subscription: catches up from its checkpoint, then follows live appends.
 * Delivers events in global order, at least once; saves the checkpoint only after the handler
 * succeeded for everything before it. With `leaderLock`, exactly one node processes it, and every
 * checkpoint write is fenced by the lease's token.
 */
export class Subscription<E extends EventShape = EventShape> {
  readonly name: string;
  readonly #options: SubscriptionOptions<E>;
  readonly #engine: EngineHooks;
  readonly #store: EventStore<E>;
  readonly #checkpoints: CheckpointStore;
  readonly #leaderLock: LockRegistry | undefined;
  readonly #retry: RetryPolicy;
  readonly #batchSize: number;
  readonly #checkpointIntervalMs: number;
  readonly #pollIntervalMs: number;
  readonly #drainTimeoutMs: number;
  readonly #stopCallTimeoutMs: number;
  readonly #logger: Logger;

  #state: SubscriptionState = 'idle';
  #position: number | undefined;
  #fencingToken: number | undefined;
  #lockDenied = false;
  #handled = 0;
  #error: Error | undefined;
  #run: Promise<void> | undefined;
  #done: Promise<void> = Promise.resolve();
  #stop = new AbortController();
  /** Fires `drainTimeoutMs` after stop(): work still in flight is abandoned. */
  #drainExpired = new AbortController();
  #drainTimer: NodeJS.Timeout | undefined;
  #wake: (() => void) | undefined;
  #wakeRequested = false;
  /** Metric attributes, made once: metrics are recorded per batch or per rare event with them. */
  readonly #attributes: Attributes;
  readonly #deadLetterAttributes: Attributes;
  /** The span of the batch being handled, when tracing is on. */
  #span: Span | undefined;
  /** Since when this node has gone without leading (refused the lock, or lost its lease); see MetricName.HandoffDuration. */
  #leaderlessSince: number | undefined;
  /** This leading period ended in a loss (counted already), not a release. */
  #leaseLost = false;

  /** `engine`: what an automation or a view passes (see EngineHooks); applications leave it out. */
  constructor(options: SubscriptionOptions<E>, engine: EngineHooks = {}) {
    if (typeof options.name !== 'string' || options.name.length === 0) {
      throw new InvalidArgumentError('A subscription needs a non-empty name (it names the checkpoint and the lock).');
    }
    if ((typeof options.handler === 'function') === (typeof options.batchHandler === 'function')) {
      throw new InvalidArgumentError(`Subscription "${options.name}" needs either a handler or a batchHandler function.`);
    }
    const { backend } = options;
    const store = options.store ?? backend?.store;
    const checkpoints = options.checkpoints ?? backend?.checkpoints;
    if (!store || !checkpoints) {
      throw new InvalidArgumentError(
        `Subscription "${options.name}" needs a backend (memory(), sqlite({ path }) or postgres({ connectionString })), or a store and checkpoints.`,
      );
    }
    this.name = options.name;
    this.#options = options;
    this.#engine = engine;
    this.#store = store;
    this.#checkpoints = checkpoints;
    this.#leaderLock = options.leaderLock === false ? undefined : (options.leaderLock ?? backend?.locks);
    this.#retry = retryPolicy(options.retry, defaultRetry);
    this.#batchSize = positiveInteger('batchSize', options.batchSize ?? 500);
    this.#checkpointIntervalMs = milliseconds('checkpointIntervalMs', options.checkpointIntervalMs ?? 250, 0);
    this.#pollIntervalMs = milliseconds('pollIntervalMs', options.pollIntervalMs ?? 500);
    this.#drainTimeoutMs = milliseconds('drainTimeoutMs', options.drainTimeoutMs ?? 10_000);
    this.#stopCallTimeoutMs = milliseconds('stopCallTimeoutMs', options.stopCallTimeoutMs ?? 2_000);
    this.#logger = options.logger ?? consoleLogger();
    this.#attributes = Object.freeze({ [TelemetryAttribute.Subscription]: this.name });
    this.#deadLetterAttributes = Object.freeze({ [TelemetryAttribute.Subscription]: this.name, [TelemetryAttribute.Stage]: 'handler' });
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
    this.#state = 'standby';
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
      lockDenied: this.#lockDenied,
      handled: this.#handled,
      error: this.#error,
    };
  }

  /** Runs until stopped or failed; resolves with the failure, if any. */
  async #loop(): Promise<Error | undefined> {
    const unsubscribe = this.#store.onAppend(() => {
      this.#requestWake();
    });
    const stopReporting = reportLag({ attributes: this.#attributes, lag: () => this.#lag() });
    try {
      // Leaderships in a row that were fenced (a write rejected while the lease still held, or without
      // a lease at all) before handling anything. One is normal (a view rebuilt under this node, a
      // checkpoint reset): lead again at once from the new checkpoint. Two mean the next leadership
      // would be fenced too, and the lock comes straight back: without a pause that loop would spin
      // (on the memory registry in microtasks alone, so that no timer, not even a stop(), ever ran).
      let fencedInARow = 0;
      while (!this.#stop.signal.aborted) {
        if (fencedInARow >= 2) {
          await delay(this.#pollIntervalMs, this.#stop.signal).catch(() => undefined);
          if (this.#stop.signal.aborted) break;
        }
        const lease = await this.#becomeLeader();
        if (!lease.ok) break;
        const handledBefore = this.#handled;
        let outcome: LeadOutcome;
        try {
          outcome = await this.#lead(lease.lease);
          const fenced = outcome === 'lost' && lease.lease?.signal.aborted !== true;
          fencedInARow = !fenced ? 0 : this.#handled > handledBefore ? 1 : fencedInARow + 1;
        } finally {
          this.#fencingToken = undefined;
          await this.#release(lease.lease);
        }
        if (outcome === 'stopped') break;
        this.#state = 'standby';
      }
      this.#state = 'stopped';
      return undefined;
    } catch (error) {
      this.#state = 'failed';
      this.#error = error instanceof Error ? error : new Error(describeError(error), { cause: error });
      this.#logger.error({ subscription: this.name, err: this.#error }, `Subscription "${this.name}" failed`);
      return this.#error;
    } finally {
      clearTimeout(this.#drainTimer);
      stopReporting();
      unsubscribe();
      this.#leaderlessSince = undefined;
      this.#run = undefined;
      this.#engine.onEnded?.();
    }
  }

  /** For the lag gauge: only the leader reports, so that standbys do not add stale values. */
  async #lag(): Promise<number | undefined> {
    if (this.#state !== 'leading') return undefined;
    const head = await this.#store.headPosition();
    return Math.max(0, head - (this.#position ?? 0));
  }

  /** Waits for the lock (when leader election is on). `ok: false` when stopped while waiting. */
  async #becomeLeader(): Promise<{ ok: true; lease: Lease | undefined } | { ok: false }> {
    const registry = this.#leaderLock;
    if (!registry) return { ok: true, lease: undefined };
    try {
      const lease = await registry.acquire(this.name, {
        signal: this.#stop.signal,
        onWaiting: () => {
          this.#lockDenied = true;
          this.#leaderlessSince ??= performance.now();
          instruments().lockDenied.add(1, this.#attributes);
          this.#logger.warn(
            { subscription: this.name },
            `Subscription "${this.name}": another node holds its lock; this node stands by and takes over when it is released`,
          );
        },
      });
      this.#lockDenied = false;
      this.#leaseLost = false;
      const metrics = instruments();
      metrics.leadershipChanges.add(1, { ...this.#attributes, [TelemetryAttribute.LeadershipChange]: 'acquired' });
      if (this.#leaderlessSince !== undefined) {
        metrics.handoffDuration.record(performance.now() - this.#leaderlessSince, this.#attributes);
        this.#leaderlessSince = undefined;
      }
      this.#logger.info({ subscription: this.name, fencingToken: lease.fencingToken }, `Subscription "${this.name}": leading`);
      return { ok: true, lease };
    } catch (error) {
      if (this.#stop.signal.aborted) return { ok: false };
      throw error;
    }
  }

  async #release(lease: Lease | undefined): Promise<void> {
    if (!lease) return;
    if (!this.#leaseLost) {
      instruments().leadershipChanges.add(1, { ...this.#attributes, [TelemetryAttribute.LeadershipChange]: 'released' });
    }
    try {
      await within(lease.release(), this.#stopCallTimeoutMs, `Subscription "${this.name}": releasing the lock`);
    } catch (error) {
      // A registry ends the lock's session when its release fails (PgLockRegistry) or lets the lease
      // expire (SqliteLockRegistry): a failed or late release only delays the standby.
      this.#logger.warn({ subscription: this.name, err: error }, `Subscription "${this.name}": releasing the lock failed`);
    }
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

    const start = await this.#loadStart(token, signal);
    if (start === 'stopped') return lost() ? this.#lostLeadership(ended.reason) : 'stopped';
    if (typeof start !== 'number') return this.#lostLeadership(start.fenced);

    // Every event up to `read` has been handed to the handler. The checkpoint may move to `read`,
    // except past outstanding work. Both are read in one synchronous step, so no work can slip in
    // between (the race the Go original fixed by ordering two reads).
    let read = start;
    const checkpoint = new Checkpointer({
      name: this.name,
      checkpoints: this.#checkpoints,
      fencingToken: token,
      position: start,
      target: () => {
        const earliest = work?.earliestPending();
        return earliest === undefined ? read : Math.min(read, earliest - 1);
      },
      lost,
      stopSignal: this.#stop.signal,
      stopCallTimeoutMs: this.#stopCallTimeoutMs,
      retry: this.#retry,
      pollIntervalMs: this.#pollIntervalMs,
      logger: this.#logger,
      onSaved: (position) => {
        this.#position = position;
        work?.checkpointed?.(position);
      },
      onFenced: fence,
    });
    this.#position = start;
    this.#fencingToken = token;
    this.#state = 'leading';
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
        this.#requestWake();
      }, Math.min(this.#checkpointIntervalMs, 10));
    });

    // Boxed: a failure may be any thrown value, undefined included.
    let failure: { error: unknown } | undefined;
    try {
      while (!signal.aborted && failure === undefined) {
        this.#wakeRequested = false;
        let batch: Recorded<E>[] | undefined;
        try {
          batch = await this.#readBatch(read, signal);
        } catch (error) {
          // An event that cannot be read (corrupt, unknown type): stop, but through the same exit as
          // any failure, so outstanding work is settled and the checkpoint saved up to it.
          failure = { error };
          break;
        }
        if (batch === undefined) continue;
        if (batch.length === 0) {
          // Once per idle poll: registers the lag gauge with a meter provider installed after start().
          instruments();
          await checkpoint.save();
          if (lost()) break;
          await this.#idle(signal);
          continue;
        }
        const result = await this.#deliver(batch, token, signal, {
          handled: (position) => {
            read = position;
            if (this.#engine.checkpointsInHandler) checkpoint.savedByHandler(position);
          },
          skipped: (position) => {
            read = position;
          },
        });
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
    await this.#drain(work, ended);
    let fenced: FencedError | undefined;
    try {
      fenced = lost() ? undefined : await checkpoint.save();
    } catch (error) {
      // After a failure, the save failing too is its echo: the first failure is the one to report.
      if (failure === undefined) throw error;
    } finally {
      await this.#finished(work);
    }
    if (fenced) return this.#lostLeadership(fenced);
    if (failure !== undefined) throw failure.error;
    return lost() ? this.#lostLeadership(ended.reason) : 'stopped';
  }

  /**
   * Hands one batch to the handler (or the batch handler); `positions.handled` is told each position
   * handled (or committed by a batch handler), `positions.skipped` each one skipped after its failure.
   * Returns what ended it early: a failure, or a FencedError.
   */
  async #deliver(
    batch: readonly Recorded<E>[],
    token: number | undefined,
    signal: AbortSignal,
    positions: { handled(position: number): void; skipped(position: number): void },
  ): Promise<{ error: unknown } | undefined> {
    const handledBefore = this.#handled;
    const tracer = activeTracer();
    const span = tracer?.startSpan(SpanName.Handle, {
      root: true,
      attributes: {
        [TelemetryAttribute.Subscription]: this.name,
        [TelemetryAttribute.EventCount]: batch.length,
        [TelemetryAttribute.FirstPosition]: (batch[0] as Recorded<E>).position,
        [TelemetryAttribute.LastPosition]: (batch[batch.length - 1] as Recorded<E>).position,
        ...(token === undefined ? {} : { [TelemetryAttribute.FencingToken]: token }),
      },
      links: linksToEvents(batch),
    });
    this.#span = span;
    let last = (batch[0] as Recorded<E>).position - 1;
    let ended: { error: unknown } | undefined;
    try {
      if (this.#options.batchHandler) {
        const result = await this.#handleBatch(batch, token, signal, (position) => {
          last = position;
          positions.handled(position);
        }, (position) => {
          last = position;
          positions.skipped(position);
        });
        if (result !== 'done' && result !== 'aborted') ended = result;
      } else {
        for (const event of batch) {
          if (signal.aborted) break;
          const result = await this.#handle(event, token, signal);
          if (result === 'aborted') break;
          if (result !== 'done') {
            ended = result;
            break;
          }
          last = event.position;
          positions.handled(event.position);
        }
      }
      return ended;
    } catch (error) {
      if (span) failSpan(span, error);
      throw error;
    } finally {
      this.#span = undefined;
      // Per batch, not per event: even a no-op counter costs a call.
      const handled = this.#handled - handledBefore;
      if (handled > 0) instruments().eventsHandled.add(handled, this.#attributes);
      if (span) {
        // A handler's failure was recorded where it happened (#afterLastAttempt).
        if (ended && isEskitError(ended.error, ErrorCode.Fenced)) failSpan(span, ended.error);
        span.setAttribute(TelemetryAttribute.Position, last);
        span.end();
      }
    }
  }

  /**
   * Lets outstanding work settle before the final save, for up to the drain timeout. A lease lost
   * meanwhile, or the timeout passing, turns the wait into an abandonment: what still runs must not go
   * on without the lease, and stop() must end.
   */
  async #drain(work: OutstandingWork | undefined, ended: AbortSignal): Promise<void> {
    if (!work) return;
    const abandon = (): void => {
      work.end('lost').catch((error: unknown) => {
        this.#logger.warn({ subscription: this.name, err: error }, `Subscription "${this.name}": abandoning outstanding work failed`);
      });
    };
    ended.addEventListener('abort', abandon, { once: true });
    try {
      const drained = await unlessAborted(work.end('stopped'), this.#drainExpired.signal, 'expired' as const);
      if (drained === 'expired') {
        this.#logger.warn(
          { subscription: this.name, drainTimeoutMs: this.#drainTimeoutMs },
          `Subscription "${this.name}": work still running ${this.#drainTimeoutMs} ms after stop() was abandoned (its signal fired); ` +
            'the checkpoint stays before it, so it runs again under the next leadership',
        );
        instruments().workAbandoned.add(1, this.#attributes);
        await work.end('lost');
      }
    } finally {
      ended.removeEventListener('abort', abandon);
    }
  }

  /** The work's last step after the final save (records what it did not cover); bounded, like every call made while stopping. */
  async #finished(work: OutstandingWork | undefined): Promise<void> {
    if (!work?.finished) return;
    try {
      await within(work.finished(), this.#stopCallTimeoutMs, `Subscription "${this.name}": recording finished work while stopping`);
    } catch (error) {
      this.#logger.warn({ subscription: this.name, err: error }, `Subscription "${this.name}": recording finished work while stopping failed; it may run again`);
    }
  }

  /**
   * Where this leadership starts: the checkpoint (claimed with the token), or the start position when
   * there is none. Transient failures (a dropped connection, a busy SQLite file, a database restarting
   * while a standby takes over) are retried with backoff until stopped or the lease is lost: a new
   * leader must not fail for good over one of them.
   */
  async #loadStart(token: number | undefined, signal: AbortSignal): Promise<number | { fenced: FencedError } | 'stopped'> {
    for (let attempt = 1; ; attempt++) {
      try {
        // A database that stopped answering must not hold a stop(): nothing was done yet to wait for.
        return await unlessAborted(this.#claimStart(token), signal, 'stopped' as const);
      } catch (error) {
        if (isEskitError(error, ErrorCode.Fenced)) return { fenced: error as FencedError };
        if (!isTransient(error)) throw error;
        this.#logger.warn({ subscription: this.name, attempt, err: error }, `Subscription "${this.name}": reading its checkpoint failed; retrying`);
      }
      if (signal.aborted) return 'stopped';
      await delay(Math.min(this.#pollIntervalMs, backoffDelay(this.#retry, attempt)), signal).catch(() => undefined);
      if (signal.aborted) return 'stopped';
    }
  }

  async #claimStart(token: number | undefined): Promise<number> {
    const checkpoints = this.#checkpoints;
    const stored = token === undefined ? await checkpoints.load(this.name) : await checkpoints.claim(this.name, token);
    if (stored !== undefined) return stored;
    const start = await this.#startPosition();
    // 'end' is the head NOW: saved before anything is read, or a stop or crash before the first event
    // would let the next start take a later head and skip what was appended in between. The other
    // start positions come out the same every time.
    if (this.#options.startFrom === 'end') await checkpoints.save(this.name, start, { fencingToken: token });
    return start;
  }

  /** Stores a failed event in the dead-letter queue, retrying while the queue is down (until stop). */
  readonly #deadLetter: FailureAction<E> = async ({ event, error, attempts, fencingToken, signal }) => {
    const deadLetters = this.#options.deadLetters as DeadLetterStore;
    // A stale leader's letter must not land after a newer leader handled the event.
    const fenced = fencingToken === undefined ? undefined : { fence: { checkpoint: this.name, fencingToken } };
    for (let attempt = 1; ; attempt++) {
      try {
        await addDeadLetter(deadLetters, deadLetterFor(this.name, 'handler', event, attempts, error), fenced);
        instruments().deadLetters.add(1, this.#deadLetterAttributes);
        this.#logger.warn({ subscription: this.name, position: event.position, err: error }, `Subscription "${this.name}": event dead-lettered`);
        return 'skip';
      } catch (storeError) {
        if (isEskitError(storeError, ErrorCode.Fenced)) throw storeError;
        this.#logger.warn({ subscription: this.name, err: storeError }, `Subscription "${this.name}": storing a dead letter failed; retrying`);
        await delay(Math.min(this.#pollIntervalMs, backoffDelay(this.#retry, attempt)), signal);
      }
    }
  };

  #lostLeadership(reason: unknown): LeadOutcome {
    if (!this.#leaseLost) {
      this.#leaseLost = true;
      instruments().leadershipChanges.add(1, { ...this.#attributes, [TelemetryAttribute.LeadershipChange]: 'lost' });
      if (!this.#stop.signal.aborted) this.#leaderlessSince = performance.now();
    }
    this.#logger.warn(
      { subscription: this.name, err: reason },
      `Subscription "${this.name}": leadership lost; stopped processing and standing by`,
    );
    return this.#stop.signal.aborted ? 'stopped' : 'lost';
  }

  async #startPosition(): Promise<number> {
    const from = this.#options.startFrom ?? 'beginning';
    if (from === 'beginning') return 0;
    if (from === 'end') return this.#store.headPosition();
    if (!Number.isSafeInteger(from.after) || from.after < 0) {
      throw new InvalidArgumentError(`startFrom.after must be a non-negative integer, got ${String(from.after)}`);
    }
    return from.after;
  }

  /**
   * One page after `position`; undefined when a transient read error was waited out, or when the
   * signal fired first (a read has no effect to wait for, and a database that stopped answering must
   * not hold a stop()).
   */
  async #readBatch(position: number, signal: AbortSignal): Promise<Recorded<E>[] | undefined> {
    try {
      return await unlessAborted(this.#read(position), signal, undefined);
    } catch (error) {
      // Events the store cannot decode, or a closed store, will not heal by waiting.
      if (!isTransient(error)) throw error;
      this.#logger.warn({ subscription: this.name, err: error }, `Subscription "${this.name}": reading events failed; retrying`);
      await delay(this.#pollIntervalMs, signal).catch(() => undefined);
      return undefined;
    }
  }

  async #read(position: number): Promise<Recorded<E>[]> {
    const batch: Recorded<E>[] = [];
    for await (const event of this.#store.readAll({ after: position, limit: this.#batchSize, types: this.#options.types })) {
      batch.push(event);
    }
    return batch;
  }

  /** New events or finished work: run the loop again now (remembered if the loop is busy). */
  #requestWake(): void {
    this.#wakeRequested = true;
    this.#wake?.();
  }

  /** Sleeps until an append is signalled, the poll interval passes, or the signal fires. */
  async #idle(signal: AbortSignal): Promise<void> {
    if (this.#wakeRequested || signal.aborted) return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.#wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, this.#pollIntervalMs);
      signal.addEventListener('abort', done, { once: true });
      this.#wake = done;
    });
  }

  /**
   * Hands the batch to the batch handler, retrying it whole; a batch that keeps failing is replayed
   * one event at a time, so the failure is pinned on one event (then skipped or stopped at as
   * configured). `committed` is told each position the handler committed, `skipped` each one skipped.
   */
  async #handleBatch(
    batch: readonly Recorded<E>[],
    fencingToken: number | undefined,
    signal: AbortSignal,
    committed: (position: number) => void,
    skipped: (position: number) => void,
  ): Promise<'done' | 'aborted' | { error: unknown }> {
    const handler = this.#options.batchHandler as BatchHandler<E>;
    let size = batch.length;
    for (let index = 0; index < batch.length; ) {
      const chunk = batch.slice(index, index + size);
      const last = chunk[chunk.length - 1] as Recorded<E>;
      let lastError: unknown;
      let attempts = 0;
      for (let attempt = 1; attempt <= this.#retry.maxAttempts; attempt++) {
        if (signal.aborted) return 'aborted';
        attempts = attempt;
        try {
          const context: HandlerContext = { subscription: this.name, fencingToken, attempt, signal };
          const result = this.#span ? callInSpan(this.#span, handler, undefined, chunk, context) : handler(chunk, context);
          if (isThenable(result) && (await this.#abandonedAtDrain(result, `the batch handler (events ${chunk[0]?.position} to ${last.position})`))) return 'aborted';
          lastError = undefined;
          break;
        } catch (error) {
          if (signal.aborted) return 'aborted';
          if (isEskitError(error, ErrorCode.Fenced)) return { error };
          lastError = error ?? new Error('the batch handler threw a nullish value');
          if (isEskitError(error, ErrorCode.PermanentFailure) || attempt === this.#retry.maxAttempts) break;
          this.#retried(error, chunk.length === 1 ? last.position : undefined, attempt);
          try {
            await delay(backoffDelay(this.#retry, attempt), signal);
          } catch {
            return 'aborted';
          }
        }
      }
      if (lastError === undefined) {
        this.#handled += chunk.length;
        committed(last.position);
        index += chunk.length;
        continue;
      }
      if (chunk.length > 1) {
        size = 1;
        continue;
      }
      const outcome = await this.#afterLastAttempt(last, lastError, attempts, fencingToken, signal);
      if (outcome !== 'done') return outcome;
      skipped(last.position);
      index += 1;
    }
    return 'done';
  }

  async #handle(
    event: Recorded<E>,
    fencingToken: number | undefined,
    signal: AbortSignal,
  ): Promise<'done' | 'aborted' | { error: unknown }> {
    for (let attempt = 1; ; attempt++) {
      try {
        const context: HandlerContext = { subscription: this.name, fencingToken, attempt, signal };
        const handler = this.#options.handler as SubscriptionHandler<E>;
        const result = this.#span ? callInSpan(this.#span, handler, this.#options, event, context) : handler.call(this.#options, event, context);
        if (isThenable(result) && (await this.#abandonedAtDrain(result, `the handler of the event at position ${event.position}`))) return 'aborted';
        this.#handled += 1;
        return 'done';
      } catch (error) {
        if (signal.aborted) return 'aborted';
        // A newer token won downstream (or a view was rebuilt under this node): step down and lead again
        // from the checkpoint, as the batch path does; retrying or dead-lettering it would be wrong.
        if (isEskitError(error, ErrorCode.Fenced)) return { error };
        if (attempt >= this.#retry.maxAttempts || isEskitError(error, ErrorCode.PermanentFailure)) return this.#afterLastAttempt(event, error, attempt, fencingToken, signal);
        this.#retried(error, event.position, attempt);
        this.#logger.warn(
          { subscription: this.name, position: event.position, attempt, err: error },
          `Subscription "${this.name}": handler failed; retrying`,
        );
        try {
          await delay(backoffDelay(this.#retry, attempt), signal);
        } catch {
          return 'aborted';
        }
      }
    }
  }

  /**
   * Awaits what a handler returned, unless stop()'s drain timeout passes first: then it is abandoned
   * (true), named in a warning, and its event is delivered again later. A handler that ignores its
   * signal must not hold stop() forever.
   */
  async #abandonedAtDrain(result: PromiseLike<unknown>, what: string): Promise<boolean> {
    if ((await unlessAborted(Promise.resolve(result), this.#drainExpired.signal, ABANDONED)) !== ABANDONED) return false;
    this.#warnAbandoned(what);
    return true;
  }

  #warnAbandoned(what: string): void {
    instruments().workAbandoned.add(1, this.#attributes);
    this.#logger.warn(
      { subscription: this.name, drainTimeoutMs: this.#drainTimeoutMs },
      `Subscription "${this.name}": ${what} was still running ${this.#drainTimeoutMs} ms after stop(); abandoned it (its signal had fired). ` +
        'The checkpoint stays before it: it is delivered again later.',
    );
  }

  /** A failed attempt that will be tried again: counted, and recorded on the batch's span. */
  #retried(error: unknown, position: number | undefined, attempt: number): void {
    instruments().handlerRetries.add(1, this.#attributes);
    if (this.#span) {
      recordFailure(this.#span, error, {
        [TelemetryAttribute.Attempt]: attempt,
        ...(position === undefined ? {} : { [TelemetryAttribute.Position]: position }),
      });
    }
  }

  async #afterLastAttempt(
    event: Recorded<E>,
    error: unknown,
    attempts: number,
    fencingToken: number | undefined,
    signal: AbortSignal,
  ): Promise<'done' | 'aborted' | { error: unknown }> {
    if (this.#span) failSpan(this.#span, error, { [TelemetryAttribute.Attempt]: attempts, [TelemetryAttribute.Position]: event.position });
    const onFailure = this.#options.onHandlerFailure ?? (this.#options.deadLetters ? this.#deadLetter : undefined);
    if (onFailure) {
      let decision: 'skip' | 'stop' | typeof ABANDONED;
      try {
        decision = await unlessAborted(onFailure({ event, error, attempts, fencingToken, signal }), this.#drainExpired.signal, ABANDONED);
      } catch (failureError) {
        // Stopping while the failure was being recorded: the event is delivered again later.
        if (signal.aborted) return 'aborted';
        // A newer leader claimed the checkpoint: this node's dead letter was refused; it steps down.
        if (isEskitError(failureError, ErrorCode.Fenced)) return { error: failureError };
        throw failureError;
      }
      if (decision === ABANDONED) {
        this.#warnAbandoned(`recording the failure of the event at position ${event.position}`);
        return 'aborted';
      }
      if (decision === 'skip') return 'done';
      if (signal.aborted) return 'aborted';
    }
    return { error: new HandlerFailedError(this.name, event.position, attempts, error) };
  }
}

/** What a wait given up at the drain timeout resolves with. */
const ABANDONED: unique symbol = Symbol('abandoned');

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as { then?: unknown } | null)?.then === 'function';
}
