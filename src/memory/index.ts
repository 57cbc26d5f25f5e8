export * from './memory-event-store.js';
export * from './memory-checkpoint-store.js';
export * from './memory-lock-registry.js';
export * from './memory-dead-letter-store.js';
export * from './memory-completion-store.js';
export * from './backend.js';
