// State views: read models updated exactly once, rebuilt without downtime, readable right after a write.
export { ChangeFeed } from './change-feed.js';
export type { ChangeFeedOptions, ChangeListener, ChangeSubscribeOptions, ViewChange } from './change-feed.js';
export { RebuildFailedError, ViewFencedError } from './errors.js';
export { MemoryView } from './memory-view.js';
export type { MemoryViewOptions } from './memory-view.js';
export type { WaitForOptions } from './progress.js';
export type { KeysOf } from './signals.js';
export { SqlView } from './sql-view.js';
export type { RebuildOptions, RebuildResult, SqlViewBackend, SqlViewOptions, SqlViewSetup, ViewMeta } from './sql-view.js';
export type { Observable, RebuildProgress, ViewOptions, ViewStatus, Waitable } from './types.js';
export { waitFor } from './wait-for.js';
export type { JsonDocument, Row, RowValue, Upsert, UpsertOptions } from './rows.js';
