import type { Decider } from '../../src/index.js';
import { EventRegistry } from '../../src/index.js';

/** A concert's ticket sales: one stream per concert. */
export type ConcertEvent =
  | { type: 'TicketsBought'; data: { orderId: string; customer: string; quantity: number } }
  | { type: 'TicketsRefunded'; data: { orderId: string; quantity: number } };

export type ConcertCommand =
  | { type: 'BuyTickets'; orderId: string; customer: string; quantity: number }
  | { type: 'RefundOrder'; orderId: string };

export interface Concert {
  sold: number;
  orders: Map<string, number>;
}

export const CAPACITY = 100;

export class SoldOut extends Error {
  readonly code = 'SOLD_OUT';
}

export const concert: Decider<Concert, ConcertCommand, ConcertEvent> = {
  initialState: () => ({ sold: 0, orders: new Map() }),
  decide: (state, command) => {
    switch (command.type) {
      case 'BuyTickets': {
        if (state.orders.has(command.orderId)) return [];
        if (state.sold + command.quantity > CAPACITY) {
          throw new SoldOut(`only ${CAPACITY - state.sold} tickets left, ${command.quantity} asked`);
        }
        const { orderId, customer, quantity } = command;
        return { type: 'TicketsBought', data: { orderId, customer, quantity } };
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

const positiveInteger = (value: unknown, name: string): number => {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer`);
  return value;
};

export const registry = new EventRegistry<ConcertEvent>({
  TicketsBought: {
    validate: (data) => {
      const d = data as ConcertEvent['data'] & { customer: string };
      positiveInteger(d.quantity, 'quantity');
      return d as Extract<ConcertEvent, { type: 'TicketsBought' }>['data'];
    },
  },
  TicketsRefunded: {},
});
