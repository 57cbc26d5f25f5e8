// A small bank account domain shared by the decider tests.
import type { Decider } from '../../src/decider/index.js';

export type AccountEvent =
  | { type: 'AccountOpened'; data: { owner: string } }
  | { type: 'MoneyDeposited'; data: { amount: number } }
  | { type: 'MoneyWithdrawn'; data: { amount: number } }
  | { type: 'AccountClosed'; data: { reason: string } };

export type AccountCommand =
  | { type: 'Open'; owner: string }
  | { type: 'Deposit'; amount: number }
  | { type: 'Withdraw'; amount: number }
  | { type: 'Close'; reason: string };

export interface AccountState {
  status: 'new' | 'open' | 'closed';
  owner: string | null;
  balance: number;
}

export type AccountErrorCode = 'ACCOUNT_NOT_OPEN' | 'ACCOUNT_OWNED_BY_OTHER' | 'INSUFFICIENT_FUNDS' | 'INVALID_AMOUNT';

export class AccountError extends Error {
  constructor(
    readonly code: AccountErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'AccountError';
  }
}

function assertAmount(amount: number): void {
  if (!Number.isInteger(amount) || amount <= 0) throw new AccountError('INVALID_AMOUNT', `amount must be a positive integer, got ${amount}`);
}

function assertOpen(state: AccountState): void {
  if (state.status !== 'open') throw new AccountError('ACCOUNT_NOT_OPEN', `the account is ${state.status}`);
}

export const account: Decider<AccountState, AccountCommand, AccountEvent> = {
  initialState: { status: 'new', owner: null, balance: 0 },
  decide(state, command) {
    switch (command.type) {
      case 'Open':
        if (state.status === 'new') return { type: 'AccountOpened', data: { owner: command.owner } };
        // Opening twice for the same owner is a retry of the same intent: nothing to record.
        if (state.owner === command.owner) return [];
        throw new AccountError('ACCOUNT_OWNED_BY_OTHER', `the account belongs to ${String(state.owner)}`);
      case 'Deposit':
        assertOpen(state);
        assertAmount(command.amount);
        return [{ type: 'MoneyDeposited', data: { amount: command.amount } }];
      case 'Withdraw':
        assertOpen(state);
        assertAmount(command.amount);
        if (command.amount > state.balance) {
          throw new AccountError('INSUFFICIENT_FUNDS', `balance ${state.balance} is below ${command.amount}`);
        }
        return [{ type: 'MoneyWithdrawn', data: { amount: command.amount } }];
      case 'Close':
        if (state.status === 'closed') return [];
        assertOpen(state);
        if (state.balance > 0) {
          // Paying out the rest and closing is one decision, recorded as two events.
          return [
            { type: 'MoneyWithdrawn', data: { amount: state.balance } },
            { type: 'AccountClosed', data: { reason: command.reason } },
          ];
        }
        return [{ type: 'AccountClosed', data: { reason: command.reason } }];
    }
  },
  evolve(state, event) {
    switch (event.type) {
      case 'AccountOpened':
        return { ...state, status: 'open', owner: event.data.owner };
      case 'MoneyDeposited':
        return { ...state, balance: state.balance + event.data.amount };
      case 'MoneyWithdrawn':
        return { ...state, balance: state.balance - event.data.amount };
      case 'AccountClosed':
        return { ...state, status: 'closed' };
    }
  },
};

export const opened = (owner = 'ada'): AccountEvent => ({ type: 'AccountOpened', data: { owner } });
export const deposited = (amount: number): AccountEvent => ({ type: 'MoneyDeposited', data: { amount } });
export const withdrawn = (amount: number): AccountEvent => ({ type: 'MoneyWithdrawn', data: { amount } });
export const closed = (reason: string): AccountEvent => ({ type: 'AccountClosed', data: { reason } });
