// The `eskit/postgres` entry point: the PostgreSQL adapter.
// Appends through this entry alone are traced too: telemetry fills core's append hook when loaded.
import '../telemetry/install.js';
export * from './postgres-event-store.js';
export { PostgresCheckpointStore, savePostgresCheckpoint } from './postgres-checkpoint-store.js';
export type { PostgresCheckpointStoreOptions, PostgresStoreHandle } from './postgres-checkpoint-store.js';
export { PostgresDeadLetterStore } from './postgres-dead-letter-store.js';
export type { PostgresDeadLetterStoreOptions } from './postgres-dead-letter-store.js';
export { PostgresCompletionStore } from './postgres-completion-store.js';
export type { PostgresCompletionStoreOptions } from './postgres-completion-store.js';
// Snapshots (issue 19).
export { PostgresSnapshotStore } from './postgres-snapshot-store.js';
export type { PostgresSnapshotStoreOptions } from './postgres-snapshot-store.js';
// Personal data (issue 20).
export { PostgresSubjectKeyStore } from './postgres-subject-key-store.js';
export type { PostgresSubjectKeyStoreOptions } from './postgres-subject-key-store.js';
export { PostgresLockRegistry } from './postgres-lock-registry.js';
export type { PostgresLockRegistryOptions } from './postgres-lock-registry.js';
export { PostgresMemberRegistry } from './postgres-member-registry.js';
export type { PostgresMemberRegistryOptions, PostgresMembersStore } from './postgres-member-registry.js';
export { migratePostgres, POSTGRES_MIGRATIONS } from './migrations.js';
export type { PostgresMigration } from './migrations.js';
export { advisoryKey, DEFAULT_SCHEMA, lockKey, notifyChannel } from './schema.js';
export type { AdvisoryPurpose, ChannelPurpose } from './schema.js';
export { PostgresViews } from './postgres-view.js';
export type { PostgresViewTx } from './view-tx.js';
export { postgres } from './backend.js';
export { PostgresAdmin } from './admin.js';
export type { PostgresAdminOptions } from './admin.js';
export { PostgresRunnerStatusStore } from './postgres-runner-status.js';
export type { PostgresRunnerStatusStoreOptions } from './postgres-runner-status.js';
export type { PostgresBackend, PostgresBackendOptions } from './backend.js';
