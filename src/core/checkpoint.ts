/**
 * Where a subscription remembers how far it got. Adapters keep it in the same database as the events,
 * so a handler that writes to that database can commit its work and the checkpoint together.
 *
 * Fencing: each checkpoint row remembers the highest fencing token that has claimed it. A save or
 * claim with an older token is rejected with `FencedError` (`ESKIT_FENCED`), so a stale leader can
 * never move a checkpoint once a newer leader has claimed it.
 */
export interface CheckpointStore {
  /** The saved position, or undefined when the subscription has never saved one. */
  load(name: string): Promise<number | undefined>;
  /**
   * Records that a new leader holds `fencingToken` and returns the saved position. Throws
   * `FencedError` when a newer token has already claimed the checkpoint.
   */
  claim(name: string, fencingToken: number): Promise<number | undefined>;
  /**
   * Saves the position. With a fencing token, the write is applied only if no newer token has claimed
   * the checkpoint (else `FencedError`); without one, it is unconditional (no leader election).
   */
  save(name: string, position: number, options?: { fencingToken?: number }): Promise<void>;
  /** Every checkpoint, for status and operator tools. */
  list(): Promise<CheckpointInfo[]>;
}

export interface CheckpointInfo {
  name: string;
  position: number;
  fencingToken: number;
  updatedAt: Date;
}

/**
 * A write made on behalf of a leader (a dead letter, a completion record, a redrive's settlement):
 * applied only while no newer token has claimed the checkpoint `checkpoint`, else it changes nothing
 * and throws `FencedError`. The check is part of the write itself (one statement, or one transaction
 * that locks the checkpoint row), so a claim is ordered with it: either the write lands before the
 * claim, and the new leader reads it after claiming, or the write is fenced.
 */
export interface WriteFence {
  /** The checkpoint whose claim the leader holds (a subscription's or an automation's name). */
  checkpoint: string;
  fencingToken: number;
}

/** Options of a write that a leader makes: see `WriteFence`. Without a fence the write is unconditional. */
export interface FencedWriteOptions {
  fence?: WriteFence;
}
