import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { deciderSpec } from '../../src/testing/decider-spec.js';
import { AccountError, account, closed, deposited, opened, withdrawn } from './account.js';

function assertionFailure(run: () => unknown, messagePart: RegExp): void {
  assert.throws(run, (error: unknown) => {
    assert.ok(error instanceof assert.AssertionError, `expected an AssertionError, got ${String(error)}`);
    assert.match(error.message, messagePart);
    return true;
  });
}

describe('deciderSpec', () => {
  describe('then', () => {
    it('passes when decide returns exactly the expected events', () => {
      deciderSpec(account).given([opened()]).when({ type: 'Deposit', amount: 5 }).then([deposited(5)]);
      // A single expected event is the same as a one-element array.
      deciderSpec(account).given([opened()]).when({ type: 'Deposit', amount: 5 }).then(deposited(5));
      deciderSpec(account).when({ type: 'Open', owner: 'ada' }).then([opened('ada')]);
      deciderSpec(account)
        .given([opened(), deposited(12)])
        .when({ type: 'Close', reason: 'moved' })
        .then([withdrawn(12), closed('moved')]);
    });

    it('passes for a no-op with []', () => {
      deciderSpec(account).given([opened('ada')]).when({ type: 'Open', owner: 'ada' }).then([]);
    });

    it('fails with a diff when the events differ', () => {
      assertionFailure(
        () => deciderSpec(account).given([opened()]).when({ type: 'Deposit', amount: 5 }).then([deposited(6)]),
        /amount: 6[\s\S]*amount: 5|amount: 5[\s\S]*amount: 6/,
      );
    });

    it('fails when there are more or fewer events than expected, or another order', () => {
      const spec = deciderSpec(account).given([opened(), deposited(12)]).when({ type: 'Close', reason: 'moved' });
      assertionFailure(() => spec.then([closed('moved')]), /MoneyWithdrawn/);
      assertionFailure(() => spec.then([closed('moved'), withdrawn(12)]), /AccountClosed/);
      assertionFailure(() => spec.then([withdrawn(12), closed('moved'), closed('moved')]), /AccountClosed/);
      assertionFailure(
        () => deciderSpec(account).given([opened('ada')]).when({ type: 'Open', owner: 'ada' }).then([opened('ada')]),
        /AccountOpened/,
      );
    });

    it('fails and shows the error when decide throws', () => {
      assertionFailure(
        () => deciderSpec(account).when({ type: 'Deposit', amount: 5 }).then([deposited(5)]),
        /threw[\s\S]*ACCOUNT_NOT_OPEN/,
      );
    });

    it('cannot be awaited by mistake', async () => {
      const spec = deciderSpec(account).when({ type: 'Open', owner: 'ada' });
      await assert.rejects(async () => {
        await (spec as unknown as PromiseLike<void>);
      }, /not a promise/);
    });
  });

  describe('thenThrows', () => {
    const overdraw = () => deciderSpec(account).given([opened(), deposited(10)]).when({ type: 'Withdraw', amount: 11 });

    it('matches by error class, code, predicate or RegExp', () => {
      overdraw().thenThrows(AccountError);
      overdraw().thenThrows({ code: 'INSUFFICIENT_FUNDS' });
      overdraw().thenThrows({ code: 'INSUFFICIENT_FUNDS', message: /below 11/ });
      overdraw().thenThrows((error) => error instanceof AccountError && error.code === 'INSUFFICIENT_FUNDS');
      overdraw().thenThrows(/INSUFFICIENT|balance 10/);
    });

    it('returns the error for further checks', () => {
      const error = overdraw().thenThrows(AccountError);
      assert.ok(error instanceof AccountError);
      assert.equal(error.code, 'INSUFFICIENT_FUNDS');
    });

    it('fails when the error does not match', () => {
      assertionFailure(() => overdraw().thenThrows({ code: 'ACCOUNT_NOT_OPEN' }), /INSUFFICIENT_FUNDS|ACCOUNT_NOT_OPEN/);
      assertionFailure(() => overdraw().thenThrows(() => false), /validation function/);
      assertionFailure(() => overdraw().thenThrows(RangeError), /instance of "RangeError"/);
    });

    it('fails and shows the events when decide does not throw', () => {
      assertionFailure(
        () => deciderSpec(account).given([opened()]).when({ type: 'Deposit', amount: 5 }).thenThrows(AccountError),
        /Expected decide to throw, but it returned[\s\S]*MoneyDeposited/,
      );
    });
  });

  describe('thenState', () => {
    it('checks the state after the given events', () => {
      deciderSpec(account).given([opened('ada'), deposited(3)]).thenState({ status: 'open', owner: 'ada', balance: 3 });
      deciderSpec(account).thenState({ status: 'new', owner: null, balance: 0 });
    });

    it('checks the state after the given and the decided events', () => {
      deciderSpec(account)
        .given([opened('ada'), deposited(3)])
        .when({ type: 'Close', reason: 'moved' })
        .thenState({ status: 'closed', owner: 'ada', balance: 0 });
    });

    it('fails on a wrong state, or when decide throws', () => {
      assertionFailure(
        () => deciderSpec(account).given([opened('ada')]).when({ type: 'Deposit', amount: 3 }).thenState({ status: 'open', owner: 'ada', balance: 4 }),
        /balance: 4|balance: 3/,
      );
      assertionFailure(() => deciderSpec(account).given([opened('ada')]).thenState({ status: 'new', owner: null, balance: 0 }), /status/);
      assertionFailure(
        () => deciderSpec(account).when({ type: 'Withdraw', amount: 1 }).thenState({ status: 'new', owner: null, balance: 0 }),
        /threw[\s\S]*ACCOUNT_NOT_OPEN/,
      );
    });
  });

  it('runs decide on the folded state each time a then… is called', () => {
    let calls = 0;
    const counted = { ...account, decide: (...args: Parameters<typeof account.decide>) => (calls++, account.decide(...args)) };
    const spec = deciderSpec(counted).given([opened()]).when({ type: 'Deposit', amount: 1 });
    assert.equal(calls, 0);
    spec.then([deposited(1)]);
    spec.thenState({ status: 'open', owner: 'ada', balance: 1 });
    assert.equal(calls, 2);
  });
});
