import type { Attributes, Span } from '@opentelemetry/api';
import { milliseconds, positiveInteger } from '../core/validate.js';
import type { CheckpointStore } from '../core/checkpoint.js';
import { deadLetterFor } from '../core/dead-letter-checks.js';
import { addDeadLetter } from '../core/storable-letter.js';
import type { DeadLetterStore } from '../core/dead-letter.js';
import { AlreadyStartedError, describeError, ErrorCode, HandlerFailedError, InvalidArgumentError, isEskitError } from '../core/errors.js';
import type { FencedError } from '../core/errors.js';
import type { EventShape, Recorded } from '../core/event.js';
import type { Lease, LockRegistry } from '../core/lock.js';
import { consoleLogger } from '../core/logger.js';
import type { Logger } from '../core/logger.js';
import { backoffDelay, delay, retryPolicy } from '../core/retry.js';
import type { RetryPolicy } from '../core/retry.js';
import type { EventStore } from '../core/store.js';
import { SpanName, TelemetryAttribute, activeTracer, callInSpan, failSpan, instruments, linksToEvents, recordFailure, reportLag } from '../telemetry/telemetry.js';

export interface HandlerContext {
  subscription: string;
  /**
   * The lease's fencing token while leader election is on; pass it to systems that can check it. A
   * `FencedError` they raise makes this node step down (the event is not retried nor dead-lettered).
   */
  fencingToken: number | undefined;
  /** 1 on the first attempt at this event. */
  attempt: number;
  /**
   * Fires when this node must stop (stop() was called, or leadership was lost). A handler that gives
   * up on it is not counted as failed: the event is delivered again later, here or on the new leader.
   */
  signal: AbortSignal;
}

export type SubscriptionHandler<E extends EventShape> = (event: Recorded<E>, context: HandlerContext) => void | Promise<void>;

export type BatchHandler<E extends EventShape> = (events: readonly Recorded<E>[], context: HandlerContext) => void | Promise<void>;

/** What happens to an event whose handler failed its last attempt. */
export type FailureAction<E extends EventShape> = (failure: {
  event: Recorded<E>;
  error: unknown;
  attempts: number;
  fencingToken: number | undefined;
  /** Fires when the node must stop (stop() or lost leadership): give up waiting, e.g. for a store that is down. */
  signal: AbortSignal;
}) => Promise<'skip' | 'stop'>;

export type StartFrom = 'beginning' | 'end' | { after: number };

/**
 * Work that outlives the handler call: the runner asks it where the checkpoint may go and tells it
 * when leadership begins and ends.
 */
export interface OutstandingWork {
  /** Leadership (or the run, without a lock) begins at the checkpoint `position`. */
  begin(context: {
    position: number;
    fencingToken: number | undefined;
    signal: AbortSignal;
    /**
     * The work met a newer fencing token downstream (a `FencedError`): this leadership ends as if the
     * lease was lost, and the node leads again once it holds a newer token.
     */
    fenced(error: FencedError): void;
  }): Promise<void>;
  /** The lowest event position whose work is not finished, or undefined when none is outstanding. */
  earliestPending(): number | undefined;
  /** `listener` is called when work finished (so the checkpoint may move while no events arrive). */
  onProgress(listener: () => void): () => void;
  /** The checkpoint was saved at `position`. */
  checkpointed?(position: number): void;
  /**
   * Leadership ends. 'stopped': let work in flight finish (and stop starting more) before resolving.
   * 'lost': abandon it at once; the next leader redoes what was not checkpointed. A 'lost' end may
   * come while a 'stopped' one is still waiting: the lease was lost while the work finished.
   */
  end(reason: 'stopped' | 'lost'): Promise<void>;
  /**
   * After a 'stopped' end, once the final checkpoint save was tried (saved, fenced, failed, or skipped
   * because leadership was lost meanwhile), before leadership is released.
   */
  finished?(): Promise<void>;
}

export interface SubscriptionOptions<E extends EventShape> {
  /** Unique per subscription: names its checkpoint and its leader lock. */
  name: string;
  store: EventStore<E>;
  checkpoints: CheckpointStore;
  /** Called once per event. Give either `handler` or `batchHandler`. */
  handler?: SubscriptionHandler<E>;
  /**
   * Called once per batch instead of `handler`, for handlers that commit a batch in one transaction.
   * A batch that keeps failing is split, so that the failure is pinned on one event.
   */
  batchHandler?: BatchHandler<E>;
  /**
   * The batch handler saves the checkpoint itself, in the same transaction as its writes (for views
   * updated exactly once). The runner then only saves it for events it skipped.
   */
  checkpointsInHandler?: boolean;
  /** Only events of these types reach the handler. */
  types?: readonly E['type'][];
  /** Events read per round trip. Default 500. */
  batchSize?: number;
  /**
   * While events keep coming, the checkpoint is saved at most this often (each save is a durable
   * commit). It is always saved when the subscription catches up, stops or fails. After a crash, at
   * most this much work is delivered again. Default 250 ms; 0 saves after every batch.
   */
  checkpointIntervalMs?: number;
  /** Where a subscription without a checkpoint begins. Default 'beginning'. */
  startFrom?: StartFrom;
  /** Retries of a failing handler. Default 5 attempts, 100 ms doubling up to 10 s, full jitter. */
  retry?: Partial<RetryPolicy>;
  /**
   * Decides what to do after the last failed attempt. The default stops the subscription with
   * `ESKIT_HANDLER_FAILED`. An automation's dead-letter queue plugs in here ('skip' = it was stored).
   */
  onHandlerFailure?: FailureAction<E>;
  /**
   * After the last attempt, store the event here (stage 'handler') and go on, instead of stopping.
   * Ignored when `onHandlerFailure` is given.
   */
  deadLetters?: DeadLetterStore;
  /** The safety net behind append notifications. Default 500 ms. */
  pollIntervalMs?: number;
  /**
   * Work the handler started but has not finished (an automation's to-do items): the checkpoint never
   * passes it. A plain subscription has none: its handler's return is the end of its work.
   */
  outstandingWork?: OutstandingWork;
  /** Turns leader election on: only the holder of the lock named `name` processes events. */
  leaderLock?: LockRegistry;
  logger?: Logger;
}

export type SubscriptionState = 'idle' | 'standby' | 'leading' | 'stopped' | 'failed';

export interface SubscriptionStatus {
  name: string;
  state: SubscriptionState;
  /** Last checkpointed position (undefined before the first claim or save). */
  position: number | undefined;
  head: number;
  /** Events behind the head (head - position), including events the type filter skips. */
  lag: number;
  fencingToken: number | undefined;
  /** True while this node waits for a lock another node holds. */
  lockDenied: boolean;
  /** Events handled by this instance since it was created. */
  handled: number;
  error: Error | undefined;
}

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
  readonly #retry: RetryPolicy;
  readonly #batchSize: number;
  readonly #checkpointIntervalMs: number;
  readonly #pollIntervalMs: number;
  readonly #logger: Logger;

  #state: SubscriptionState = 'idle';
  #position: number | undefined;
  #fencingToken: number | undefined;
  #lockDenied = false;
  #handled = 0;
  #error: Error | undefined;
  #run: Promise<void> | undefined;
  #stop = new AbortController();
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

  constructor(options: SubscriptionOptions<E>) {
    if (typeof options.name !== 'string' || options.name.length === 0) {
      throw new InvalidArgumentError('A subscription needs a non-empty name (it names the checkpoint and the lock).');
    }
    if ((typeof options.handler === 'function') === (typeof options.batchHandler === 'function')) {
      throw new InvalidArgumentError(`Subscription "${options.name}" needs either a handler or a batchHandler function.`);
    }
    this.name = options.name;
    this.#options = options;
    this.#retry = retryPolicy(options.retry, defaultRetry);
    this.#batchSize = positiveInteger('batchSize', options.batchSize ?? 500);
    this.#checkpointIntervalMs = milliseconds('checkpointIntervalMs', options.checkpointIntervalMs ?? 250, 0);
    this.#pollIntervalMs = milliseconds('pollIntervalMs', options.pollIntervalMs ?? 500);
    this.#logger = options.logger ?? consoleLogger();
    this.#attributes = Object.freeze({ [TelemetryAttribute.Subscription]: this.name });
    this.#deadLetterAttributes = Object.freeze({ [TelemetryAttribute.Subscription]: this.name, [TelemetryAttribute.Stage]: 'handler' });
  }

  /** Starts in the background: leading at once without a lock, else standing by until the lock is free. */
  async start(): Promise<void> {
    if (this.#run) throw new AlreadyStartedError(`Subscription "${this.name}"`);
    this.#stop = new AbortController();
    this.#error = undefined;
    this.#state = 'standby';
    this.#run = this.#loop();
  }

  /**
   * Lets the event in flight finish, saves the checkpoint, releases leadership. Safe to call twice;
   * resolves when all of that is done.
   */
  async stop(): Promise<void> {
    const run = this.#run;
    if (!run) return;
    this.#stop.abort();
    await run;
  }

  /** Resolves when the subscription has stopped or failed (the status says which). */
  async whenStopped(): Promise<SubscriptionStatus> {
    await this.#run;
    return this.status();
  }

  async status(): Promise<SubscriptionStatus> {
    const head = await this.#options.store.headPosition();
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

  async #loop(): Promise<void> {
    const unsubscribe = this.#options.store.onAppend(() => {
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
    } catch (error) {
      this.#state = 'failed';
      this.#error = error instanceof Error ? error : new Error(describeError(error), { cause: error });
      this.#logger.error({ subscription: this.name, err: this.#error }, `Subscription "${this.name}" failed`);
    } finally {
      stopReporting();
      unsubscribe();
      this.#leaderlessSince = undefined;
      this.#run = undefined;
    }
  }

  /** For the lag gauge: only the leader reports, so that standbys do not add stale values. */
  async #lag(): Promise<number | undefined> {
    if (this.#state !== 'leading') return undefined;
    const head = await this.#options.store.headPosition();
    return Math.max(0, head - (this.#position ?? 0));
  }

  /** Waits for the lock (when leader election is on). `ok: false` when stopped while waiting. */
  async #becomeLeader(): Promise<{ ok: true; lease: Lease | undefined } | { ok: false }> {
    const registry = this.#options.leaderLock;
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
      await lease.release();
    } catch (error) {
      // The lock dies with its connection anyway; a failed release only delays the standby.
      this.#logger.warn({ subscription: this.name, err: error }, `Subscription "${this.name}": releasing the lock failed`);
    }
  }

  /** Processes events while this node leads. Throws only for failures that must stop the subscription. */
  async #lead(lease: Lease | undefined): Promise<LeadOutcome> {
    const work = this.#options.outstandingWork;
    const token = lease?.fencingToken;
    // Leadership ends when the lease is lost, or when outstanding work is fenced downstream.
    const fencedByWork = work ? new AbortController() : undefined;
    const enders = [lease?.signal, fencedByWork?.signal].filter((s): s is AbortSignal => s !== undefined);
    const ended = enders.length > 1 ? AbortSignal.any(enders) : enders[0];
    const signal = ended ? AbortSignal.any([this.#stop.signal, ended]) : this.#stop.signal;
    const lost = (): boolean => ended?.aborted === true;

    const start = await this.#loadStart(token, signal);
    if (start === 'stopped') return lost() ? this.#lostLeadership(ended?.reason) : 'stopped';
    if (typeof start !== 'number') return this.#lostLeadership(start.fenced);
    let saved = start;
    this.#position = saved;
    this.#fencingToken = token;
    this.#state = 'leading';
    await work?.begin({ position: saved, fencingToken: token, signal, fenced: (error) => fencedByWork?.abort(error) });

    // Every event up to `read` has been handed to the handler. The checkpoint may move to `read`,
    // except past outstanding work. Both are read in one synchronous step, so no work can slip in
    // between (the race the Go original fixed by ordering two reads).
    let read = saved;
    const target = (): number => {
      const earliest = work?.earliestPending();
      return earliest === undefined ? read : Math.min(read, earliest - 1);
    };
    let savedAt = performance.now();
    /** Saves the target when it moved; returns the error when this node's write was fenced. */
    const advance = async (): Promise<FencedError | undefined> => {
      const to = target();
      if (to <= saved) return undefined;
      savedAt = performance.now();
      const result = await this.#saveCheckpoint(to, token, lost);
      if (result === 'saved') {
        saved = to;
        this.#position = saved;
        work?.checkpointed?.(saved);
      }
      return result === 'saved' || result === 'unsaved' ? undefined : result;
    };
    // Finished work only moves the checkpoint: coalesce bursts of completions into one wake-up (each
    // wake-up may save, and a save is a durable commit).
    let progressTimer: NodeJS.Timeout | undefined;
    const stopProgress = work?.onProgress(() => {
      progressTimer ??= setTimeout(() => {
        progressTimer = undefined;
        this.#requestWake();
      }, Math.min(this.#checkpointIntervalMs, 10));
    });
    const stopWatching = (): void => {
      stopProgress?.();
      clearTimeout(progressTimer);
    };

    // Boxed: a failure may be any thrown value, undefined included.
    let failure: { error: unknown } | undefined;
    let fenced: FencedError | undefined;
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
          fenced = await advance();
          if (fenced) break;
          await this.#idle(signal);
          continue;
        }
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
        try {
          if (this.#options.batchHandler) {
            const result = await this.#handleBatch(batch, token, signal, (position) => {
              read = position;
              if (this.#options.checkpointsInHandler && position > saved) {
                saved = position;
                this.#position = saved;
              }
            }, (position) => {
              read = position;
            });
            if (result !== 'done' && result !== 'aborted') {
              if (isEskitError(result.error, ErrorCode.Fenced)) fenced = result.error as FencedError;
              else failure = { error: result.error };
            }
          } else {
            for (const event of batch) {
              if (signal.aborted) break;
              const result = await this.#handle(event, token, signal);
              if (result === 'aborted') break;
              if (result !== 'done') {
                if (isEskitError(result.error, ErrorCode.Fenced)) fenced = result.error as FencedError;
                else failure = { error: result.error };
                break;
              }
              read = event.position;
            }
          }
          if (fenced) break;
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
            if (fenced) failSpan(span, fenced);
            span.setAttribute(TelemetryAttribute.Position, read);
            span.end();
          }
        }
        if (lost()) break;
        // Catching up: save on a timer, not per batch (a save is a durable commit). Failures, stops
        // and the end of the backlog (the empty read above) always save.
        if (failure === undefined && performance.now() - savedAt < this.#checkpointIntervalMs) continue;
        fenced = await advance();
        if (fenced) break;
      }
    } catch (error) {
      // A save that fails for good, or a failure action that throws: the same exit as any failure,
      // so that outstanding work is ended (else it would go on running without the lease).
      failure = { error };
    } finally {
      stopWatching();
    }

    if (fenced || lost()) {
      await work?.end('lost');
      return this.#lostLeadership(fenced ?? ended?.reason);
    }
    // Stopping or failing: let outstanding work settle, then record everything that completed. A
    // lease lost while it settles makes it a loss: what still runs must be abandoned, not awaited.
    const abandon = (): void => {
      work?.end('lost').catch((error: unknown) => {
        this.#logger.warn({ subscription: this.name, err: error }, `Subscription "${this.name}": abandoning outstanding work failed`);
      });
    };
    ended?.addEventListener('abort', abandon, { once: true });
    try {
      await work?.end('stopped');
    } finally {
      ended?.removeEventListener('abort', abandon);
    }
    try {
      fenced = lost() ? undefined : await advance();
    } catch (error) {
      // After a failure, the save failing too is its echo: the first failure is the one to report.
      if (failure === undefined) throw error;
    } finally {
      await work?.finished?.();
    }
    if (fenced) return this.#lostLeadership(fenced);
    if (failure !== undefined) throw failure.error;
    return lost() ? this.#lostLeadership(ended?.reason) : 'stopped';
  }

  /**
   * Where this leadership starts: the checkpoint (claimed with the token), or the start position when
   * there is none. Transient failures (a dropped connection, a busy SQLite file, a database restarting
   * while a standby takes over) are retried with backoff until stopped or the lease is lost: a new
   * leader must not fail for good over one of them.
   */
  async #loadStart(token: number | undefined, signal: AbortSignal): Promise<number | { fenced: FencedError } | 'stopped'> {
    const { checkpoints } = this.#options;
    for (let attempt = 1; ; attempt++) {
      try {
        const stored = token === undefined ? await checkpoints.load(this.name) : await checkpoints.claim(this.name, token);
        if (stored !== undefined) return stored;
        const start = await this.#startPosition();
        // 'end' is the head NOW: saved before anything is read, or a stop or crash before the first
        // event would let the next start take a later head and skip what was appended in between.
        // The other start positions come out the same every time.
        if (this.#options.startFrom === 'end') await checkpoints.save(this.name, start, { fencingToken: token });
        return start;
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

  /**
   * Saves the checkpoint, retrying transient failures (a dropped connection, a busy SQLite file).
   * Gives up ('unsaved') when leadership is lost, or after a few tries once stopping: the events after
   * the old checkpoint are then delivered again later, which at-least-once allows.
   */
  async #saveCheckpoint(position: number, fencingToken: number | undefined, lost: () => boolean): Promise<'saved' | 'unsaved' | FencedError> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#options.checkpoints.save(this.name, position, { fencingToken });
        return 'saved';
      } catch (error) {
        if (isEskitError(error, ErrorCode.Fenced)) return error as FencedError;
        if (!isTransient(error)) throw error;
        this.#logger.warn({ subscription: this.name, position, attempt, err: error }, `Subscription "${this.name}": saving the checkpoint failed; retrying`);
      }
      if (lost() || (this.#stop.signal.aborted && attempt >= 3)) return 'unsaved';
      await delay(Math.min(this.#pollIntervalMs, backoffDelay(this.#retry, attempt)));
    }
  }

  /** Stores a failed event in the dead-letter queue, retrying while the queue is down (until stop). */
  readonly #deadLetter: FailureAction<E> = async ({ event, error, attempts, signal }) => {
    const deadLetters = this.#options.deadLetters as DeadLetterStore;
    for (let attempt = 1; ; attempt++) {
      try {
        await addDeadLetter(deadLetters, deadLetterFor(this.name, 'handler', event, attempts, error));
        instruments().deadLetters.add(1, this.#deadLetterAttributes);
        this.#logger.warn({ subscription: this.name, position: event.position, err: error }, `Subscription "${this.name}": event dead-lettered`);
        return 'skip';
      } catch (storeError) {
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
    if (from === 'end') return this.#options.store.headPosition();
    if (!Number.isSafeInteger(from.after) || from.after < 0) {
      throw new InvalidArgumentError(`startFrom.after must be a non-negative integer, got ${String(from.after)}`);
    }
    return from.after;
  }

  /** One page after `position`; undefined when a transient read error was waited out. */
  async #readBatch(position: number, signal: AbortSignal): Promise<Recorded<E>[] | undefined> {
    const batch: Recorded<E>[] = [];
    try {
      for await (const event of this.#options.store.readAll({ after: position, limit: this.#batchSize, types: this.#options.types })) {
        batch.push(event);
      }
      return batch;
    } catch (error) {
      // Events the store cannot decode, or a closed store, will not heal by waiting.
      if (!isTransient(error)) throw error;
      this.#logger.warn({ subscription: this.name, err: error }, `Subscription "${this.name}": reading events failed; retrying`);
      await delay(this.#pollIntervalMs, signal).catch(() => undefined);
      return undefined;
    }
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
          await (this.#span ? callInSpan(this.#span, handler, undefined, chunk, context) : handler(chunk, context));
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
        await (this.#span ? callInSpan(this.#span, handler, this.#options, event, context) : handler.call(this.#options, event, context));
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
      let decision: 'skip' | 'stop';
      try {
        decision = await onFailure({ event, error, attempts, fencingToken, signal });
      } catch (failureError) {
        // Stopping while the failure was being recorded: the event is delivered again later.
        if (signal.aborted) return 'aborted';
        throw failureError;
      }
      if (decision === 'skip') return 'done';
      if (signal.aborted) return 'aborted';
    }
    return { error: new HandlerFailedError(this.name, event.position, attempts, error) };
  }
}

/** Failures that can heal by waiting: anything that is not an eskit error, and a busy database. */
function isTransient(error: unknown): boolean {
  return !isEskitError(error) || isEskitError(error, ErrorCode.StoreBusy);
}

