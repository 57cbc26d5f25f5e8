export * from './errors.js';
export type * from './event.js';
export * from './registry.js';
export * from './store.js';
export * from './store-base.js';
