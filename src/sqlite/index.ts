// `eskit/sqlite`: the SQLite adapter (better-sqlite3).
// Appends through this entry alone are traced too: telemetry fills core's append hook when loaded.
import '../telemetry/install.js';
export * from './sqlite-event-store.js';
export { configureSqlite, openSqlite, DEFAULT_BUSY_TIMEOUT_MS } from './connection.js';
export { migrateSqlite, SQLITE_MIGRATIONS, sqliteSchemaVersion } from './migrations.js';
export type { SqliteMigration } from './migrations.js';
export { SqliteBusyError } from './errors.js';
export { SqliteCheckpointStore, saveSqliteCheckpoint } from './sqlite-checkpoint-store.js';
export type { SqliteCheckpointStoreOptions } from './sqlite-checkpoint-store.js';
export { SqliteLockRegistry } from './sqlite-lock-registry.js';
export type { SqliteLockRegistryOptions } from './sqlite-lock-registry.js';
export { SqliteMemberRegistry } from './sqlite-member-registry.js';
export type { SqliteMemberRegistryOptions } from './sqlite-member-registry.js';
export type { SqliteConnectionOptions } from './connection.js';
export { SqliteDeadLetterStore } from './sqlite-dead-letter-store.js';
export type { SqliteDeadLetterStoreOptions } from './sqlite-dead-letter-store.js';
export { SqliteCompletionStore } from './sqlite-completion-store.js';
export type { SqliteCompletionStoreOptions } from './sqlite-completion-store.js';
// Snapshots (issue 19).
export { SqliteSnapshotStore } from './sqlite-snapshot-store.js';
export type { SqliteSnapshotStoreOptions } from './sqlite-snapshot-store.js';
// Personal data (issue 20).
export { SqliteSubjectKeyStore } from './sqlite-subject-key-store.js';
export type { SqliteSubjectKeyStoreOptions } from './sqlite-subject-key-store.js';
export { SqliteViews } from './sqlite-view.js';
export type { SqliteViewTx } from './view-tx.js';
export { sqlite } from './backend.js';
export { SqliteAdmin } from './admin.js';
export type { SqliteAdminOptions } from './admin.js';
export { SqliteRunnerStatusStore } from './sqlite-runner-status.js';
export type { SqliteRunnerStatusStoreOptions } from './sqlite-runner-status.js';
export type { SqliteBackend, SqliteBackendOptions } from './backend.js';
