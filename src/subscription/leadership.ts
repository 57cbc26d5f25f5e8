import type { Attributes } from '@opentelemetry/api';
import { within } from '../core/deadline.js';
import type { Lease, LockRegistry } from '../core/lock.js';
import type { Logger } from '../core/logger.js';
import { TelemetryAttribute, instruments } from '../telemetry/telemetry.js';

export interface LeadershipOptions {
  name: string;
  /** Undefined: leader election is off, and this node always leads. */
  registry: LockRegistry | undefined;
  /** Standing by was denied, or the lock was granted: the status row changes. */
  onChange?: () => void;
  stopCallTimeoutMs: number;
  attributes: Attributes;
  logger: Logger;
  /** See EngineHooks.routineStandby. */
  routineStandby?: boolean;
}

/**
 * One subscription's side of leader election: waiting for the lock (saying so when another node holds
 * it), releasing it (bounded: a database that stopped answering must not hold a stop), and the metrics
 * of changes and handoffs.
 */
export class Leadership {
  /** True while this node waits for a lock another node holds. */
  denied = false;
  /** Since when this node has gone without leading (refused the lock, or lost its lease); see MetricName.HandoffDuration. */
  #leaderlessSince: number | undefined;
  /** This leading period ended in a loss (counted already), not a release. */
  #leaseLost = false;

  constructor(private readonly o: LeadershipOptions) {}

  /** Waits for the lock (when leader election is on). `ok: false` when stopped while waiting. */
  async acquire(stop: AbortSignal): Promise<{ ok: true; lease: Lease | undefined } | { ok: false }> {
    const { registry, name, attributes, logger } = this.o;
    if (!registry) return { ok: true, lease: undefined };
    try {
      const lease = await registry.acquire(name, {
        signal: stop,
        routine: this.o.routineStandby,
        onWaiting: () => {
          this.denied = true;
          this.o.onChange?.();
          this.#leaderlessSince ??= performance.now();
          const message = `Subscription "${name}": another node holds its lock; this node stands by and takes over when it is released`;
          if (this.o.routineStandby) {
            logger.debug({ subscription: name }, message);
            return;
          }
          instruments().lockDenied.add(1, attributes);
          logger.warn({ subscription: name }, message);
        },
      });
      this.denied = false;
      this.#leaseLost = false;
      this.o.onChange?.();
      const metrics = instruments();
      metrics.leadershipChanges.add(1, { ...attributes, [TelemetryAttribute.LeadershipChange]: 'acquired' });
      if (this.#leaderlessSince !== undefined) {
        metrics.handoffDuration.record(performance.now() - this.#leaderlessSince, attributes);
        this.#leaderlessSince = undefined;
      }
      logger.info({ subscription: name, fencingToken: lease.fencingToken }, `Subscription "${name}": leading`);
      return { ok: true, lease };
    } catch (error) {
      if (stop.aborted) return { ok: false };
      throw error;
    }
  }

  async release(lease: Lease | undefined): Promise<void> {
    if (!lease) return;
    const { name, attributes, logger } = this.o;
    if (!this.#leaseLost) instruments().leadershipChanges.add(1, { ...attributes, [TelemetryAttribute.LeadershipChange]: 'released' });
    try {
      await within(lease.release(), this.o.stopCallTimeoutMs, `Subscription "${name}": releasing the lock`);
    } catch (error) {
      // A registry ends the lock's session when its release fails (PostgresLockRegistry) or lets the lease
      // expire (SqliteLockRegistry): a failed or late release only delays the standby.
      logger.warn({ subscription: name, err: error }, `Subscription "${name}": releasing the lock failed`);
    }
  }

  /** The leading period ended in a loss (the lease, or a fenced write): counted once, and logged. */
  lost(reason: unknown, stopping: boolean): void {
    const { name, attributes, logger } = this.o;
    if (!this.#leaseLost) {
      this.#leaseLost = true;
      instruments().leadershipChanges.add(1, { ...attributes, [TelemetryAttribute.LeadershipChange]: 'lost' });
      if (!stopping) this.#leaderlessSince = performance.now();
    }
    logger.warn({ subscription: name, err: reason }, `Subscription "${name}": leadership lost; stopped processing and standing by`);
  }

  /** The run ended: the next one measures its handoff afresh. */
  ended(): void {
    this.#leaderlessSince = undefined;
  }
}
