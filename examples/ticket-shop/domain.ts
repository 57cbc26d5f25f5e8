// The write side of the ticket shop: one stream per concert, a decider that sells and refunds tickets,
// and the registry that checks event data on the way in. Nothing here knows about a database.
import type { Decider } from '../../src/index.js';
import { EventRegistry } from '../../src/index.js';

/** What happened to a concert's tickets. The buyer's address travels with the order, for the mail. */
export type ConcertEvent =
  | { type: 'TicketsBought'; data: { orderId: string; customer: string; email: string; quantity: number } }
  | { type: 'TicketsRefunded'; data: { orderId: string; quantity: number } };

export type ConcertCommand =
  | { type: 'BuyTickets'; orderId: string; customer: string; email: string; quantity: number }
  | { type: 'RefundOrder'; orderId: string };

/** What the decider needs to know to decide: tickets sold, and the open orders (for refunds). */
export interface Concert {
  sold: number;
  orders: Map<string, number>;
}

/** Seats per concert. */
export const CAPACITY = 240;

export const CONCERTS = ['concert-jazz', 'concert-rock', 'concert-folk'] as const;

/** A domain rejection: the command is refused, nothing is written, and it is not retried. */
export class SoldOut extends Error {
  readonly code = 'SOLD_OUT';
}

export const concert: Decider<Concert, ConcertCommand, ConcertEvent> = {
  // A function: evolve below mutates the state it is given.
  initialState: () => ({ sold: 0, orders: new Map() }),
  decide: (state, command) => {
    switch (command.type) {
      case 'BuyTickets': {
        // Buying the same order twice (a client retrying a request) is a no-op, not a second sale.
        if (state.orders.has(command.orderId)) return [];
        if (state.sold + command.quantity > CAPACITY) {
          throw new SoldOut(`only ${CAPACITY - state.sold} tickets left, ${command.quantity} asked`);
        }
        const { orderId, customer, email, quantity } = command;
        return { type: 'TicketsBought', data: { orderId, customer, email, quantity } };
      }
      case 'RefundOrder': {
        const quantity = state.orders.get(command.orderId);
        if (quantity === undefined) return [];
        return { type: 'TicketsRefunded', data: { orderId: command.orderId, quantity } };
      }
    }
  },
  evolve: (state, event) => {
    if (event.type === 'TicketsBought') {
      state.orders.set(event.data.orderId, event.data.quantity);
      state.sold += event.data.quantity;
    } else {
      state.orders.delete(event.data.orderId);
      state.sold -= event.data.quantity;
    }
    return state;
  },
};

type Bought = Extract<ConcertEvent, { type: 'TicketsBought' }>['data'];
type Refunded = Extract<ConcertEvent, { type: 'TicketsRefunded' }>['data'];

const text = (value: unknown, name: string): string => {
  if (typeof value !== 'string' || value.length === 0) throw new Error(`${name} must be a non-empty string`);
  return value;
};
const positiveInteger = (value: unknown, name: string): number => {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer`);
  return value;
};

/** Appending an event with bad data fails before anything is written (ESKIT_EVENT_VALIDATION). */
export const registry = new EventRegistry<ConcertEvent>({
  TicketsBought: {
    validate: (data): Bought => {
      const d = (data ?? {}) as Record<string, unknown>;
      return { orderId: text(d.orderId, 'orderId'), customer: text(d.customer, 'customer'), email: text(d.email, 'email'), quantity: positiveInteger(d.quantity, 'quantity') };
    },
  },
  TicketsRefunded: {
    validate: (data): Refunded => {
      const d = (data ?? {}) as Record<string, unknown>;
      return { orderId: text(d.orderId, 'orderId'), quantity: positiveInteger(d.quantity, 'quantity') };
    },
  },
});
