// The `eskit/postgres` entry point: the PostgreSQL adapter.
export * from './postgres-event-store.js';
export { migratePostgres, POSTGRES_MIGRATIONS } from './migrations.js';
export type { PostgresMigration } from './migrations.js';
export { advisoryKey, DEFAULT_SCHEMA } from './schema.js';
export type { AdvisoryPurpose } from './schema.js';
