// The `eskit` entry point: the core contracts, deciders and the in-memory adapter.
// Telemetry fills core's append hook when loaded (core cannot import it); every entry loads it.
import './telemetry/install.js';
export * from './core/index.js';
export * from './decider/index.js';
export * from './memory/index.js';
export * from './subscription/index.js';
export * from './automation/index.js';
export * from './view/index.js';
export * from './telemetry/index.js';
