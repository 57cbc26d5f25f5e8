// The PostgreSQL lock registry, split by concern under ./lock/: its SQL (sql.ts), the connection's
// life cycle (connection.ts), the request queue and its grants (requests.ts), the lease (lease.ts),
// failure classes (failures.ts), and the registry that ties them together (registry.ts).
export { PostgresLockRegistry } from './lock/registry.js';
export type { PostgresLockRegistryOptions } from './lock/registry.js';
export { isTransient } from './lock/failures.js';
