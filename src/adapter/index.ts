// `eskit/adapter`: what an adapter author builds a backend with. The contracts every adapter
// implements (EventStore, CheckpointStore, DeadLetterStore, CompletionStore, LockRegistry, MemberRegistry, Admin,
// RunnerStatusStore, the SQL view backend), EventStoreBase (extend it and implement eight storage
// primitives), the checks and decoders the bundled adapters share, and every error class. Prove an
// adapter with the suites of `eskit/testing`.
import '../telemetry/install.js';

export * from '../core/index.js';
export {
  assertOwnTables,
  checkSqlViewSpec,
  checkTableName,
  isViewCheckpoint,
  setupNames,
  shadowName,
} from '../core/view-backend.js';
// A MemberRegistry of your own accepts and refuses what the bundled ones do (the conformance suite checks it).
export { checkGroup, checkHeartbeat, checkMemberId, MEMBER_ROW_RETENTION_MS, sortMembers } from '../core/member-checks.js';
export { PendingRows, jsonValue, onConflict, quoteColumn, rowShape } from '../core/view-rows.js';
export type { RowShape } from '../core/view-rows.js';
export {
  assertFenceHolds,
  checkCompletedItems,
  checkDeadLetterCountQuery,
  checkDeadLetterId,
  checkDeadLetterQuery,
  checkFence,
  checkNewDeadLetter,
  checkOutcome,
  checkPosition,
  checkSelector,
  checkSource,
  completionId,
  decodeDeadLetter,
} from '../core/dead-letter-checks.js';
export type { CheckedDeadLetter, CheckedSelector, StoredDeadLetterRow } from '../core/dead-letter-checks.js';
