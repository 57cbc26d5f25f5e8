export * from './errors.js';
export type * from './event.js';
export * from './registry.js';
export * from './store.js';
export * from './store-base.js';
export type * from './checkpoint.js';
export type * from './lock.js';
export * from './logger.js';
export * from './retry.js';
