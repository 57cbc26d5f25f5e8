// `eskit/memory`: the in-memory backend and its parts (`memory()` is also in the root entry).
import '../telemetry/install.js';

export * from './memory-event-store.js';
export * from './memory-checkpoint-store.js';
export * from './memory-lock-registry.js';
export * from './memory-member-registry.js';
export * from './memory-dead-letter-store.js';
export * from './memory-completion-store.js';
// Snapshots (issue 19).
export * from './memory-snapshot-store.js';
export * from './backend.js';
export { MemoryAdmin } from './admin.js';
export type { MemoryAdminParts } from './admin.js';
export { MemoryRunnerStatusStore } from './memory-runner-status.js';
export { MemorySubjectKeyStore } from './memory-subject-key-store.js';
