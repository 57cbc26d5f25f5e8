import type { CheckpointStore } from '../core/checkpoint.js';
import { InvalidArgumentError } from '../core/errors.js';
import type { EventShape } from '../core/event.js';
import type { LockRegistry } from '../core/lock.js';
import type { EventStore } from '../core/store.js';
import type { SubscriptionOptions } from './types.js';

/** What a subscription runs on: given one by one, or taken from its backend; refused when missing. */
export interface SubscriptionParts<E extends EventShape> {
  store: EventStore<E>;
  checkpoints: CheckpointStore;
  /** Undefined with `leaderLock: false`, or without a lock anywhere: every node processes it. */
  leaderLock: LockRegistry | undefined;
}

export function subscriptionParts<E extends EventShape>(options: SubscriptionOptions<E>): SubscriptionParts<E> {
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
  const leaderLock = options.leaderLock === false ? undefined : (options.leaderLock ?? backend?.locks);
  return { store, checkpoints, leaderLock };
}
