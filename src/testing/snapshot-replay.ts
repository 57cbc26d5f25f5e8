import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import type { EventShape } from '../core/event.js';
import { jsonCopy } from '../core/validate.js';
import { fold, initialStateOf } from '../decider/decider.js';
import type { Decider } from '../decider/decider.js';
import type { SnapshotOptions } from '../decider/snapshots.js';

export interface SnapshotReplayOptions<S> extends Pick<SnapshotOptions<S>, 'toJSON' | 'fromJSON'> {
  /** Cut the stream after every this many events (default 1: after each). */
  every?: number;
}

/**
 * Asserts that a snapshot plus the events after it gives the same state as folding every event, for
 * your decider and a stream of your events: the stream is cut after each event (or every `every`),
 * the state there goes through `toJSON`, JSON text and `fromJSON` as a stored snapshot would, and the
 * rest of the events are folded onto it. It fails at the first cut whose result differs from the full
 * replay, or whose state JSON cannot hold (give `toJSON`/`fromJSON` then, as to the CommandHandler).
 *
 * ```ts
 * it('cart snapshots are faithful', () => {
 *   assertSnapshotsMatchReplay(cartDecider, sampleCartEvents);
 * });
 * ```
 *
 * Run it on events that use every field your `evolve` reads. It also catches an `evolve` that changes
 * the events it is given, or that relies on something the state does not carry.
 */
export function assertSnapshotsMatchReplay<S, E extends EventShape>(
  decider: Pick<Decider<S, never, E>, 'initialState' | 'evolve'>,
  events: readonly E[],
  options: SnapshotReplayOptions<S> = {},
): void {
  const every = options.every ?? 1;
  assert.ok(Number.isSafeInteger(every) && every >= 1, 'every must be a positive integer');
  const toJSON = options.toJSON ?? ((state: S) => state);
  const fromJSON = options.fromJSON ?? ((json: unknown) => json as S);
  // Each fold gets copies of the events, so that an evolve that changes them cannot hide a difference.
  const copies = (): E[] => structuredClone(events as E[]);
  const full = fold(decider, copies());
  for (let cut = 0; cut <= events.length; cut += every) {
    const all = copies();
    const atCut = fold(decider, all.slice(0, cut), initialStateOf(decider));
    let text: string;
    try {
      text = JSON.stringify(jsonCopy(toJSON(atCut), 'state'));
    } catch (error) {
      assert.fail(`the state after ${cut} event(s) cannot be a snapshot: ${error instanceof Error ? error.message : String(error)}`);
    }
    const restored = fromJSON(JSON.parse(text) as unknown);
    const resumed = fold(decider, all.slice(cut), restored);
    assert.deepStrictEqual(
      resumed,
      full,
      `a snapshot after ${cut} of ${events.length} event(s) plus the rest differs from a full replay.\n` +
        `snapshot state: ${inspect(JSON.parse(text), { depth: 6 })}\n` +
        'Make the state plain JSON (or give toJSON/fromJSON that keep everything evolve reads).',
    );
  }
}
