// The `eskit` entry point: the core contracts, deciders and the in-memory adapter.
export * from './core/index.js';
export * from './decider/index.js';
export * from './memory/index.js';
export * from './subscription/index.js';
export * from './automation/index.js';
export * from './view/index.js';
export * from './telemetry/index.js';
