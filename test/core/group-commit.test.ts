// GroupCommit on its own, with a writer that records the groups it is given and answers when the test
// says so: how groups form, what each append gets back, and that nothing waits on a timer.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { v7 as uuidv7 } from 'uuid';
import { GroupCommit } from '../../src/core/group-commit.js';
import type { GroupedAppend, GroupOutcome } from '../../src/core/group-commit.js';
import type { PreparedEvent, WrittenEvents } from '../../src/core/store-base.js';

function event(id: string = uuidv7(), data = '{}'): PreparedEvent {
  return { id, type: 'Noted', data, metadata: '{}' };
}

function append(streamId: string, events: PreparedEvent[] = [event()]): GroupedAppend {
  return { streamId, events, expected: 'any' };
}

function written(position: number): WrittenEvents {
  return { streamVersion: 1, positions: [position], timestamp: new Date(0) };
}

/** A writer whose groups the test sees, answering each group when `release()` is called (or at once). */
class RecordingWriter {
  readonly groups: string[][] = [];
  #releases: (() => void)[] = [];
  constructor(private readonly hold: boolean) {}

  readonly write = (group: readonly GroupedAppend[]): Promise<GroupOutcome[]> | GroupOutcome[] => {
    this.groups.push(group.map((a) => a.streamId));
    const outcomes = group.map((a, index) => (a.streamId.startsWith('bad') ? new Error(`refused ${a.streamId}`) : written(index + 1)));
    if (!this.hold) return outcomes;
    return new Promise((resolve) => this.#releases.push(() => resolve(outcomes)));
  };

  release(): void {
    const next = this.#releases.shift();
    assert.ok(next, 'no group is waiting to be answered');
    next();
  }

  get waiting(): number {
    return this.#releases.length;
  }
}

/** Resolves after the current turn of the event loop, with everything it queued, has run. */
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('GroupCommit', () => {
  it('writes a lone append in the same turn of the event loop: no timer, nothing to wait for', async () => {
    const writer = new RecordingWriter(false);
    const groups = new GroupCommit(writer.write);
    let immediateRan = false;
    setImmediate(() => (immediateRan = true));
    const result = groups.append(append('a'));
    await result;
    assert.equal(immediateRan, false, 'the append waited for the next turn of the event loop');
    assert.deepEqual(writer.groups, [['a']]);
  });

  it('writes appends made in one burst as one group, in call order', async () => {
    const writer = new RecordingWriter(false);
    const groups = new GroupCommit(writer.write);
    await Promise.all(['a', 'b', 'c', 'd'].map((s) => groups.append(append(s))));
    assert.deepEqual(writer.groups, [['a', 'b', 'c', 'd']]);
  });

  it('queues appends made while a group is in flight, and writes them together once it is done', async () => {
    const writer = new RecordingWriter(true);
    const groups = new GroupCommit(writer.write);
    const first = groups.append(append('a'));
    await nextTurn();
    assert.equal(writer.waiting, 1);
    const later = ['b', 'c'].map((s) => groups.append(append(s)));
    await nextTurn();
    const alsoLater = groups.append(append('d'));
    await nextTurn();
    assert.deepEqual(writer.groups, [['a']], 'nothing else may be written while a group is in flight');
    writer.release();
    await first;
    await nextTurn();
    assert.deepEqual(writer.groups, [['a'], ['b', 'c', 'd']]);
    writer.release();
    await Promise.all([...later, alsoLater]);
  });

  it('gives each append its own outcome: a refused one rejects alone, the rest resolve', async () => {
    const writer = new RecordingWriter(false);
    const groups = new GroupCommit(writer.write);
    const results = await Promise.allSettled([groups.append(append('a')), groups.append(append('bad-1')), groups.append(append('c'))]);
    assert.deepEqual(
      results.map((r) => r.status),
      ['fulfilled', 'rejected', 'fulfilled'],
    );
    assert.match(String((results[1] as PromiseRejectedResult).reason), /refused bad-1/);
    assert.deepEqual((results[2] as PromiseFulfilledResult<WrittenEvents>).value.positions, [3]);
  });

  it('fails every append of a group when the writer throws (nothing of it was written)', async () => {
    const failure = new Error('connection lost');
    const groups = new GroupCommit(() => Promise.reject(failure));
    const results = await Promise.allSettled([groups.append(append('a')), groups.append(append('b'))]);
    assert.deepEqual(
      results.map((r) => (r.status === 'rejected' ? r.reason : r.value)),
      [failure, failure],
    );
  });

  it('cuts groups at the limits, and sends an append bigger than a limit alone', async () => {
    const writer = new RecordingWriter(false);
    const groups = new GroupCommit(writer.write, { maxAppends: 2, maxEvents: 3, maxChars: 100 });
    const big = append('big', [event(undefined, `"${'x'.repeat(200)}"`)]);
    const three = append('three', [event(), event(), event()]);
    await Promise.all([append('a'), append('b'), append('c'), three, big, append('d')].map((a) => groups.append(a)));
    assert.deepEqual(writer.groups, [['a', 'b'], ['c'], ['three'], ['big'], ['d']]);
  });

  it('never puts two appends of one event id in a group, and sends an append that repeats an id alone', async () => {
    const writer = new RecordingWriter(false);
    const groups = new GroupCommit(writer.write);
    const shared = uuidv7();
    const twice = uuidv7();
    await Promise.all(
      [append('a', [event(shared)]), append('b'), append('c', [event(shared)]), append('d'), append('e', [event(twice), event(twice)]), append('f')].map(
        (a) => groups.append(a),
      ),
    );
    assert.deepEqual(writer.groups, [['a', 'b'], ['c', 'd'], ['e'], ['f']]);
  });

  it('drain() resolves once every queued append was answered', async () => {
    const writer = new RecordingWriter(true);
    const groups = new GroupCommit(writer.write);
    const answered: string[] = [];
    void groups.append(append('a')).then(() => answered.push('a'));
    await nextTurn();
    void groups.append(append('b')).then(() => answered.push('b'));
    let drained = false;
    const drain = groups.drain().then(() => (drained = true));
    writer.release();
    await nextTurn();
    assert.deepEqual(answered, ['a']);
    assert.equal(drained, false, 'drain() resolved with b still queued');
    writer.release();
    await drain;
    assert.deepEqual(answered, ['a', 'b']);
  });
});
