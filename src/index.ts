// The `eskit` entry point: what an application writes against, listed by name. The parts behind the
// one-call backends are in `eskit/memory`, `eskit/sqlite` and `eskit/postgres`; what an adapter
// author needs (the contracts, the store base, the helpers) is in `eskit/adapter`.
// Telemetry fills core's append hook when loaded (core cannot import it); every entry loads it.
import './telemetry/install.js';

// Where events live: one call per backend (the database ones in their own entries).
export { memory } from './memory/backend.js';
export type { Backend } from './core/backend.js';
export type { AppendResult, EventStore, ExpectedVersion } from './core/store.js';
// Categories: the stream id up to its first '-', as readAll({ category }) and the runners' category option read it.
export { categoryOf } from './core/store.js';
export type { EventShape, Metadata, NewEvent, Recorded } from './core/event.js';
export { EventRegistry } from './core/registry.js';

// State changes: deciders and the command handler.
export { CommandHandler } from './decider/command-handler.js';
export type { Decider } from './decider/decider.js';
export type { HandleResult } from './decider/command-handler.js';

// Reacting to events: subscriptions, automations and views.
export { Subscription } from './subscription/subscription.js';
export type { HandlerContext, PartitionStatus, SubscriptionOptions, SubscriptionStatus } from './subscription/subscription.js';
export { Automation, inTransaction } from './automation/automation.js';
export type { AutomationOptions, AutomationStatus, ExecuteContext, TodoItem, TriggerContext } from './automation/automation.js';
export { MemoryView, SqlView, waitFor } from './view/index.js';
export type { SqlViewHost, SqlViewOptions, SqlViewSetup, SqlViewTx, Upsert, ViewStatus } from './view/index.js';
export type { DeadLetter, DeadLetterStore } from './core/dead-letter.js';
export type { Lease, LockRegistry } from './core/lock.js';
export type { LiveMember, MemberHeartbeat, MemberRegistry } from './core/members.js';
export type { RetryPolicy } from './core/retry.js';

// Errors: check them by code (isEskitError(error, ErrorCode.Concurrency)), which works across copies.
export { ConcurrencyError, ErrorCode, EskitError, FencedError, HandlerFailedError, PermanentFailure, isEskitError } from './core/errors.js';

// A store for years (issue 19): what applications name. The option, result and error types, the
// snapshot store contract and the registry's definition types are in `eskit/adapter`; errors are
// checked by code (ErrorCode.StreamDeleted, ...).
export { STREAM_ARCHIVED, STREAM_DELETED, STREAM_TRUNCATED } from './core/lifecycle-exports.js';
export type { StreamLifecycleEvent } from './core/lifecycle-exports.js';
export type { UpcastStep } from './core/registry.js';
export { allOf, anyOf, everyEvents, onEventTypes, slowerThan, snapshotWhen } from './core/snapshot.js';
export type { SnapshotPolicy } from './core/snapshot.js';
export type { SnapshotOptions } from './decider/snapshots.js';

// Personal data (issue 20): declare personal fields Personal<T>; forget(subject) erases them. The key
// store contract is in `eskit/adapter`.
export { isRedacted } from './core/personal/types.js';
export type { Personal, Redacted } from './core/personal/types.js';
export { SUBJECT_FORGOTTEN } from './core/lifecycle-exports.js';
export type { SubjectForgottenEvent } from './core/lifecycle-exports.js';

// Logging and telemetry.
export { consoleLogger, silentLogger } from './core/logger.js';
export type { Logger } from './core/logger.js';
export { MetricName, SpanName, TELEMETRY_SCOPE, TelemetryAttribute, TRACE_METADATA, eventSpanContext } from './telemetry/index.js';
