import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decidedEvents, fold, initialStateOf } from '../../src/decider/index.js';
import type { Decider } from '../../src/decider/index.js';
import { account, closed, deposited, opened, withdrawn } from './account.js';

describe('fold', () => {
  it('returns the initial state for no events', () => {
    assert.deepStrictEqual(fold(account, []), { status: 'new', owner: null, balance: 0 });
  });

  it('applies events in order', () => {
    const state = fold(account, [opened('ada'), deposited(100), withdrawn(30), deposited(5)]);
    assert.deepStrictEqual(state, { status: 'open', owner: 'ada', balance: 75 });
    assert.deepStrictEqual(fold(account, [opened(), deposited(10), withdrawn(10), closed('moved')]), {
      status: 'closed',
      owner: 'ada',
      balance: 0,
    });
  });

  it('continues from a given state', () => {
    const half = fold(account, [opened('bob'), deposited(10)]);
    assert.deepStrictEqual(fold(account, [deposited(7)], half), { status: 'open', owner: 'bob', balance: 17 });
  });

  it('accepts any iterable of events', () => {
    function* history(): Generator<ReturnType<typeof deposited>> {
      yield opened();
      yield deposited(1);
      yield deposited(2);
    }
    assert.equal(fold(account, history()).balance, 3);
  });

  it('starts every fold from a fresh state when initialState is a factory', () => {
    // A mutating evolve would leak between folds if the initial state were a shared object.
    const tally: Decider<{ seen: string[] }, never, { type: string; data: null }> = {
      initialState: () => ({ seen: [] }),
      decide: () => [],
      evolve(state, event) {
        state.seen.push(event.type);
        return state;
      },
    };
    assert.deepStrictEqual(fold(tally, [{ type: 'A', data: null }]), { seen: ['A'] });
    assert.deepStrictEqual(fold(tally, [{ type: 'B', data: null }]), { seen: ['B'] });
    assert.notStrictEqual(initialStateOf(tally), initialStateOf(tally));
  });

  it('uses a plain initial state value as is', () => {
    assert.strictEqual(initialStateOf(account), account.initialState);
  });
});

describe('decidedEvents', () => {
  it('turns a single event into an array and copies arrays', () => {
    const one = deposited(1);
    assert.deepStrictEqual(decidedEvents(one), [one]);
    const many = [deposited(1), deposited(2)] as const;
    const copy = decidedEvents(many);
    assert.deepStrictEqual(copy, [...many]);
    assert.notStrictEqual(copy, many);
    assert.deepStrictEqual(decidedEvents([]), []);
  });
});

describe('account decider', () => {
  it('decides a single event, several events, or none', () => {
    const open = fold(account, [opened('ada'), deposited(40)]);
    assert.deepStrictEqual(account.decide(open, { type: 'Deposit', amount: 2 }), [deposited(2)]);
    assert.deepStrictEqual(account.decide(open, { type: 'Close', reason: 'moved' }), [withdrawn(40), closed('moved')]);
    assert.deepStrictEqual(account.decide(open, { type: 'Open', owner: 'ada' }), []);
    assert.deepStrictEqual(account.decide(fold(account, []), { type: 'Open', owner: 'ada' }), opened('ada'));
  });
});
