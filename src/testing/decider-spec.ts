import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import type { EventShape } from '../core/event.js';
import { decidedEvents, fold } from '../decider/decider.js';
import type { Decider } from '../decider/decider.js';

/**
 * What `thenThrows` accepts, as `assert.throws` reads it:
 * - an error class (the error must be an instance),
 * - a predicate that returns `true` for the expected error,
 * - an object whose properties the error must have, e.g. `{ code: 'ESKIT_...' }` (values may be RegExps),
 * - a RegExp matched against the error's string form.
 */
export type ErrorMatcher =
  | (abstract new (...args: never[]) => Error)
  | ((error: unknown) => boolean)
  | RegExp
  | { code?: string; name?: string; message?: string | RegExp; [key: string]: unknown };

export interface DeciderSpecGiven<S, C, E extends EventShape> {
  /** The command to decide on the state the given events produce. */
  when(command: C): DeciderSpecWhen<S, E>;
  /** Asserts the state the given events produce (no command). */
  thenState(expected: S): void;
}

export interface DeciderSpecWhen<S, E extends EventShape> {
  /**
   * Asserts that `decide` returns exactly these events, in order (`[]` for a no-op). Fails with a
   * diff, or with the error when `decide` threw.
   */
  then(expected: E | readonly E[]): void;
  /** Asserts that `decide` throws a matching error, and returns that error for further checks. */
  thenThrows(matcher: ErrorMatcher): unknown;
  /** Asserts the state after the given events and the decided ones. */
  thenState(expected: S): void;
}

export interface DeciderSpec<S, C, E extends EventShape> extends DeciderSpecGiven<S, C, E> {
  /** The events already in the stream, oldest first. Without `given`, the stream is empty. */
  given(events: readonly E[]): DeciderSpecGiven<S, C, E>;
}

/**
 * Given/when/then for deciders, pure and without a store:
 *
 * ```ts
 * deciderSpec(account).given([opened]).when({ type: 'Deposit', amount: 5 }).then([deposited(5)]);
 * deciderSpec(account).given([]).when({ type: 'Deposit', amount: 5 }).thenThrows({ code: 'ACCOUNT_NOT_OPEN' });
 * ```
 *
 * Nothing runs until a `then…` method is called, so every spec needs one.
 */
export function deciderSpec<S, C, E extends EventShape>(decider: Decider<S, C, E>): DeciderSpec<S, C, E> {
  const givenWith = (events: readonly E[]): DeciderSpecGiven<S, C, E> => ({
    when: (command) => whenStep(decider, events, command),
    thenState: (expected) => assert.deepStrictEqual(fold(decider, events), expected),
  });
  return { ...givenWith([]), given: givenWith };
}

function whenStep<S, C, E extends EventShape>(decider: Decider<S, C, E>, given: readonly E[], command: C): DeciderSpecWhen<S, E> {
  const run = (): { state: S; outcome: { ok: true; events: E[] } | { ok: false; error: unknown } } => {
    const state = fold(decider, given);
    try {
      return { state, outcome: { ok: true, events: decidedEvents(decider.decide(state, command)) } };
    } catch (error) {
      return { state, outcome: { ok: false, error } };
    }
  };
  const expectEvents = (what: string): { state: S; events: E[] } => {
    const { state, outcome } = run();
    if (!outcome.ok) {
      const failure = new assert.AssertionError({
        message: `Expected decide to ${what}, but it threw: ${inspect(outcome.error)}`,
        actual: outcome.error,
        operator: 'then',
      });
      throw Object.assign(failure, { cause: outcome.error });
    }
    return { state, events: outcome.events };
  };
  return {
    then(expected) {
      if (typeof expected === 'function') {
        // `then` makes this object look like a promise; an `await` on it would land here.
        throw new TypeError('A decider spec is not a promise: call .then(expectedEvents) without awaiting the spec.');
      }
      const { events } = expectEvents('return events');
      // No custom message: it would replace the diff node prints.
      assert.deepStrictEqual(events, decidedEvents(expected));
    },
    thenThrows(matcher) {
      const { outcome } = run();
      if (outcome.ok) {
        assert.fail(`Expected decide to throw, but it returned ${inspect(outcome.events, { depth: 6 })}`);
      }
      assert.throws(() => {
        throw outcome.error;
      }, matcher as Parameters<typeof assert.throws>[1]);
      return outcome.error;
    },
    thenState(expected) {
      const { state, events } = expectEvents('return events');
      assert.deepStrictEqual(fold(decider, events, state), expected);
    },
  };
}
