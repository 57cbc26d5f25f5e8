// `eskit/testing`: what an application or a third-party adapter needs to test against eskit.
export * from './conformance.js';
export * from './decider-spec.js';
export * from './wait.js';
export * from './dead-letter-conformance.js';
export * from './checkpoint-conformance.js';
export * from './completion-conformance.js';
export * from './lock-registry-conformance.js';
export * from './member-registry-conformance.js';
export * from './admin-conformance.js';
// Snapshots (issue 19).
export * from './snapshot-conformance.js';
// Personal data (issue 20).
export * from './subject-key-conformance.js';
export * from './personal-data-conformance.js';
