// State views: read models updated exactly once, rebuilt without downtime, readable right after a write.
export { ChangeFeed } from './change-feed.js';
export type { ChangeFeedOptions, ChangeListener, ChangeSubscribeOptions, ViewChange } from './change-feed.js';
export { RebuildFailedError } from '../core/errors.js';
export { MemoryView } from './memory-view.js';
export type { MemoryRebuildOptions, MemoryRebuildResult, MemoryViewOptions } from './memory-view.js';
export type { WaitForOptions } from './progress.js';
export type { KeysOf } from './signals.js';
export { SqlView } from './sql-view.js';
export type { RebuildOptions, RebuildResult, SqlViewHost, SqlViewOptions } from './sql-view.js';
export type { Observable, RebuildProgress, ViewOptions, ViewStatus, Waitable } from './types.js';
export { waitFor } from './wait-for.js';
// What an application's views are written with; the contract lives in core, where the adapters implement it.
export { ViewFencedError } from '../core/errors.js';
export type { SqlViewSetup, SqlViewTx } from '../core/view-backend.js';
export type { JsonDocument, Row, RowValue, Upsert, UpsertOptions } from '../core/view-rows.js';
