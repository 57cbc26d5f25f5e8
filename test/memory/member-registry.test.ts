import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { memory, MemoryMemberRegistry } from '../../src/memory/index.js';
import { memberRegistryConformance, waitUntil } from '../../src/testing/index.js';

memberRegistryConformance<MemoryMemberRegistry>({
  name: 'memory',
  create: async () => {
    // Every node of a process shares one registry, made as the backend makes it.
    const backend = memory({ leaderElection: true });
    const members = backend.members;
    assert.ok(members, 'leaderElection brings a member registry');
    return { registry: () => members, close: () => backend.close() };
  },
});

describe('MemoryMemberRegistry', () => {
  it('expire() makes a member dead at once, as a killed node, and tells the listeners', async () => {
    const registry = new MemoryMemberRegistry();
    const heard: string[] = [];
    registry.onChange((group) => heard.push(group));
    await registry.heartbeat('g', { id: 'a', partitions: 4, ttlMs: 60_000 });
    await registry.heartbeat('g', { id: 'b', partitions: 4, ttlMs: 60_000 });
    await waitUntil(() => heard.length === 2, { message: 'both joins' });
    registry.expire('g', 'a');
    assert.deepEqual(await registry.heartbeat('g', { id: 'b', partitions: 4, ttlMs: 60_000 }), [{ id: 'b', partitions: 4 }]);
    await waitUntil(() => heard.length === 3, { message: 'the expiry to be announced' });
    registry.expire('g', 'a');
    registry.expire('g', 'nobody');
    registry.expire('other', 'a');
    // A join in another group fences: the three expire() calls above announced nothing before it.
    await registry.heartbeat('fence', { id: 'c', partitions: 1, ttlMs: 60_000 });
    await waitUntil(() => heard.includes('fence'), { message: 'the fence' });
    assert.deepEqual(heard, ['g', 'g', 'g', 'fence']);
  });

  it('calls listeners after the call that changed the members has returned, and one that throws does not stop the others', async () => {
    const registry = new MemoryMemberRegistry();
    const heard: string[] = [];
    registry.onChange(() => {
      throw new Error('a broken listener');
    });
    registry.onChange((group) => heard.push(group));
    const joining = registry.heartbeat('g', { id: 'a', partitions: 4, ttlMs: 60_000 });
    assert.deepEqual(heard, [], 'not from inside heartbeat');
    await joining;
    await waitUntil(() => heard.length === 1, { message: 'the join' });
  });

  it('is on a memory backend exactly when leader election is', async () => {
    assert.equal(memory().members, undefined);
    const backend = memory({ leaderElection: true });
    assert.ok(backend.members instanceof MemoryMemberRegistry);
    assert.ok(backend.locks);
    await backend.close();
  });
});
