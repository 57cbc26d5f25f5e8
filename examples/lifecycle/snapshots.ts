// Snapshots for a decider: a long stream loads from its latest snapshot and the events after it.
// Runs on SQLite in memory and finishes by itself: npx tsx examples/lifecycle/snapshots.ts
import assert from 'node:assert/strict';
import { CommandHandler, ErrorCode, everyEvents, isEskitError } from '../../src/index.js';
import type { Decider } from '../../src/index.js';
import { sqlite } from '../../src/sqlite/index.js';
import { assertSnapshotsMatchReplay } from '../../src/testing/index.js';

type CounterEvent = { type: 'Incremented'; data: { by: number } } | { type: 'Reset'; data: null };
type CounterCommand = { type: 'increment'; by: number } | { type: 'reset' };
interface Counter {
  value: number;
  increments: number;
}

const counter: Decider<Counter, CounterCommand, CounterEvent> = {
  initialState: () => ({ value: 0, increments: 0 }),
  decide: (_state, command) => (command.type === 'reset' ? { type: 'Reset', data: null } : { type: 'Incremented', data: { by: command.by } }),
  evolve: (state, event) => (event.type === 'Reset' ? { ...state, value: 0 } : { value: state.value + event.data.by, increments: state.increments + 1 }),
};

// In a test: a snapshot plus the events after it must give what a full replay gives.
assertSnapshotsMatchReplay(counter, [
  { type: 'Incremented', data: { by: 2 } },
  { type: 'Reset', data: null },
  { type: 'Incremented', data: { by: 5 } },
]);

const backend = sqlite<CounterEvent>({ path: ':memory:' });
// version: the version of the state's shape and of evolve. Change it when they change: older
// snapshots are then ignored (a full replay), never misread. A snapshot every 100 events.
const handler = new CommandHandler({ backend, decider: counter, snapshots: { version: 1, policy: everyEvents(100) } });

for (let i = 1; i <= 250; i++) await handler.handle('counter-1', { type: 'increment', by: i });
// Snapshots are written after a command returns (never delaying or failing it): wait for them here.
await handler.flushSnapshots();

const snapshot = await backend.snapshots.load('counter-1', 'decider');
assert.equal(snapshot?.streamVersion, 200);
assert.deepEqual(snapshot?.state, { value: 20_100, increments: 200 });

// A read loads as a command does: the snapshot at 200, then events 201..250.
const { state, version } = await handler.aggregate('counter-1');
assert.equal(version, 250);
assert.deepEqual(state, { value: 31_375, increments: 250 });

// evolve changed (it now ignores Reset)? Bump the version: the old snapshot is ignored, the stream is
// replayed, and the next due command writes a snapshot of version 2 in its place.
const v2 = new CommandHandler({ backend, decider: { ...counter, evolve: (s, e) => (e.type === 'Reset' ? s : counter.evolve(s, e)) }, snapshots: { version: 2 } });
assert.deepEqual((await v2.aggregate('counter-1')).state, state);
await v2.handle('counter-1', { type: 'increment', by: 1 });
await v2.flushSnapshots();
assert.equal((await backend.snapshots.load('counter-1', 'decider'))?.stateVersion, '2');

// A truncated stream loads from a snapshot at or after the cut; without one, it fails clearly
// instead of deciding on a partial history.
await backend.store.truncateStream('counter-1', 240);
assert.equal((await v2.aggregate('counter-1')).version, 251);
const unsnapshotted = new CommandHandler({ backend, decider: counter });
await unsnapshotted.aggregate('counter-1').then(
  () => assert.fail('a history that starts at 240 cannot be replayed from 1'),
  (error: unknown) => assert.ok(isEskitError(error, ErrorCode.StreamHistoryMissing)),
);

await backend.close();
