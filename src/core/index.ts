export * from './errors.js';
export type * from './event.js';
export * from './registry.js';
export * from './store.js';
export * from './store-base.js';
// Stream lifecycle (issue 19).
export * from './lifecycle-exports.js';
export type * from './checkpoint.js';
// Snapshots (issue 19).
export * from './snapshot.js';
// Personal data (issue 20).
export * from './personal/index.js';
export type * from './lock.js';
export type * from './members.js';
export type * from './backend.js';
export * from './admin.js';
export * from './runner-status.js';
export * from './logger.js';
export * from './retry.js';
export type * from './dead-letter.js';
export * from './validate.js';
export type { SqlViewBackend, SqlViews, SqlViewSetup, SqlViewSpec, SqlViewTx, ViewMeta } from './view-backend.js';
export type { JsonDocument, Row, RowValue, Upsert, UpsertOptions } from './view-rows.js';
