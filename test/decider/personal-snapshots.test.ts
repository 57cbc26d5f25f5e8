// Snapshots of streams holding personal data: sealed with the subjects' keys, never stored in the
// clear, and erased with the first subject forgotten (the next load replays, and reads the marker).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EventRegistry, isRedacted } from '../../src/index.js';
import type { Personal } from '../../src/index.js';
import { CommandHandler } from '../../src/decider/index.js';
import type { Decider } from '../../src/decider/index.js';
import { memory } from '../../src/memory/index.js';

type ProfileEvent =
  | { type: 'Registered'; data: { customerId: string; email: Personal<string> } }
  | { type: 'Visited'; data: { customerId: string } };
type ProfileState = { email: Personal<string> | undefined; visits: number };
type ProfileCommand = { type: 'Register'; email: string } | { type: 'Visit' };

const SENTINEL = 'ann.sentinel@example.com';

const profile: Decider<ProfileState, ProfileCommand, ProfileEvent> = {
  initialState: { email: undefined, visits: 0 },
  decide: (_state, command) =>
    command.type === 'Register'
      ? [{ type: 'Registered', data: { customerId: 'c1', email: command.email } }]
      : [{ type: 'Visited', data: { customerId: 'c1' } }],
  evolve: (state, event) => (event.type === 'Registered' ? { ...state, email: event.data.email } : { ...state, visits: state.visits + 1 }),
};

const registry = new EventRegistry<ProfileEvent>({
  Registered: { personal: { subject: (data) => data.customerId, fields: ['email'] } },
  Visited: {},
});

describe('snapshots of streams with personal data', () => {
  it('are sealed with the subject\'s key (no plaintext in the snapshot store), and load like any other', async () => {
    const backend = memory<ProfileEvent>({ registry });
    const handler = new CommandHandler({ backend, decider: profile, snapshots: { version: 1, every: 2, cacheSize: 0 } });
    await handler.handle('profile-c1', { type: 'Register', email: SENTINEL });
    for (let i = 0; i < 3; i++) await handler.handle('profile-c1', { type: 'Visit' });
    await handler.flushSnapshots();
    const stored = await backend.snapshots.load('profile-c1', 'decider');
    assert.ok(stored, 'a snapshot was written');
    assert.doesNotMatch(JSON.stringify(stored.state), /sentinel/, 'the stored state holds no plaintext');
    assert.equal((stored.state as { $sealed?: unknown }).$sealed, 1);
    assert.deepEqual((await handler.aggregate('profile-c1')).state, { email: SENTINEL, visits: 3 });
  });

  it('a stream without personal data keeps plain snapshots', async () => {
    const backend = memory<ProfileEvent>({ registry });
    const handler = new CommandHandler({ backend, decider: profile, snapshots: { version: 1, every: 2 } });
    for (let i = 0; i < 2; i++) await handler.handle('profile-c2', { type: 'Visit' });
    await handler.flushSnapshots();
    assert.deepEqual((await backend.snapshots.load('profile-c2', 'decider'))?.state, { visits: 2 });
  });

  for (const cacheSize of [0, 100]) {
    it(`after forget, the next load replays and reads the marker (snapshot cache ${cacheSize === 0 ? 'off' : 'on'})`, async () => {
      const backend = memory<ProfileEvent>({ registry });
      const handler = new CommandHandler({ backend, decider: profile, snapshots: { version: 1, every: 2, cacheSize } });
      await handler.handle('profile-c1', { type: 'Register', email: SENTINEL });
      await handler.handle('profile-c1', { type: 'Visit' });
      await handler.flushSnapshots();
      assert.equal((await handler.aggregate('profile-c1')).state.email, SENTINEL);
      await backend.store.forget('c1');
      const { state, version } = await handler.aggregate('profile-c1');
      assert.ok(isRedacted(state.email), `the email reads as the marker, got ${JSON.stringify(state.email)}`);
      assert.equal(state.visits, 1);
      assert.equal(version, 2);
      // Commands go on (events without personal data append); a snapshot of the erased state is never sealed with the dead key.
      await handler.handle('profile-c1', { type: 'Visit' });
      await handler.handle('profile-c1', { type: 'Visit' });
      await handler.flushSnapshots();
      const stored = await backend.snapshots.load('profile-c1', 'decider');
      assert.doesNotMatch(JSON.stringify(stored?.state ?? null), /sentinel/);
      const after = await handler.aggregate('profile-c1');
      assert.ok(isRedacted(after.state.email));
      assert.equal(after.state.visits, 3);
    });
  }
});
