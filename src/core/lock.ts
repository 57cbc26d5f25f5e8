/**
 * Leader election. A lease is exclusive across every node using the same registry backend.
 */
export interface LockRegistry {
  /**
   * Names this node (unique per registry instance): status rows and partition memberships use it.
   * Optional: without one, a runner makes up an id.
   */
  readonly holderId?: string;
  /**
   * Waits until this node holds the lock `name`, or `signal` aborts (then rejects with the abort reason).
   * `onWaiting` is called once when the lock is held elsewhere, so a standby can say it is one; it may
   * abort the signal (a try-lock), and if it throws, the acquire rejects with what it threw.
   */
  acquire(name: string, options?: AcquireOptions): Promise<Lease>;
  /** Releases every lease and resources (connections). Safe to call twice. */
  close(): Promise<void>;
}

export interface AcquireOptions {
  signal?: AbortSignal;
  onWaiting?: () => void;
  /**
   * Waiting is routine (a partition that another node holds, of the many a node stands by for): the
   * registry logs it, and the grant, at debug level instead of as a warning.
   */
  routine?: boolean;
}

export interface Lease {
  readonly name: string;
  /** Grows with every new holder of this name, across nodes and restarts. */
  readonly fencingToken: number;
  /** Fires when the lease is lost (connection dropped, expired, released). Stop work at once. */
  readonly signal: AbortSignal;
  /** Gives the lock up so a standby can take over at once. Safe to call twice. */
  release(): Promise<void>;
}
