/**
 * Who is alive in a group of nodes (the nodes running one partitioned runner), judged by the
 * database's clock: how partitions are shared out. A member is alive until its last heartbeat's
 * `ttlMs` runs out, or, where the adapter can see it, at once when its lock session ends (a killed
 * process), whichever comes first.
 */
export interface MemberRegistry {
  /**
   * Marks `member` alive in `group` for `ttlMs` more (by the database's clock), remembering the
   * partition count it runs with, and returns the live members of the group (this one included),
   * sorted by id. A member that was not alive before is announced to the others (`onChange`).
   */
  heartbeat(group: string, member: MemberHeartbeat): Promise<LiveMember[]>;
  /** Takes `member` out of `group` at once and tells the others (a graceful stop). Safe to call twice. */
  leave(group: string, member: string): Promise<void>;
  /**
   * `listener` hears that a member joined or left `group` (a hint, for speed: the heartbeat is the
   * truth, and a missed notification only delays a rebalance to the next one). Returns the remover.
   */
  onChange(listener: (group: string) => void): () => void;
}

export interface MemberHeartbeat {
  id: string;
  /** The partition count this member runs with: members with another count are refused (see PartitionCountError). */
  partitions: number;
  ttlMs: number;
}

export interface LiveMember {
  id: string;
  partitions: number;
}
