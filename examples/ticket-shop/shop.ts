// The traffic: shoppers placing orders through the command handler, racing each other on the same
// concert streams (optimistic concurrency: a conflict makes the handler load, decide and append again).
import { CommandHandler } from '../../src/index.js';
import type { EventStore } from '../../src/index.js';
import { CONCERTS, concert } from './domain.js';
import type { ConcertEvent } from './domain.js';

const NAMES = ['ada', 'ben', 'chloe', 'dev', 'elif', 'femi', 'grace', 'hugo', 'ines', 'jon', 'kai', 'lena', 'milo', 'nora', 'omar', 'pia', 'quinn', 'rosa', 'sam', 'tariq', 'uma', 'vera', 'wen'];

/** The one customer whose address cannot receive mail: their confirmations end in the dead-letter queue. */
export const MALLORY = { customer: 'mallory', email: 'mallory@tickets.invalid' };

export interface PlannedOrder {
  index: number;
  orderId: string;
  concert: string;
  customer: string;
  email: string;
  quantity: number;
  /** The shopper asks for a refund right after buying. */
  refund: boolean;
  /** The shopper reads the order back from the view at once (read-your-writes). */
  readBack: boolean;
}

/** The same orders on every run: what differs between runs is only who wins the races. */
export function planOrders(count: number): PlannedOrder[] {
  return Array.from({ length: count }, (_, index) => {
    const buyer = index % 50 === 17 ? MALLORY : { customer: NAMES[index % NAMES.length] as string, email: `${NAMES[index % NAMES.length] as string}@example.com` };
    return {
      index,
      orderId: `order-${String(index + 1).padStart(4, '0')}`,
      concert: CONCERTS[index % CONCERTS.length] as string,
      ...buyer,
      quantity: 1 + ((index * 7) % 4),
      refund: index % 7 === 3,
      readBack: index % 40 === 0,
    };
  });
}

export interface ShopTally {
  placed: number;
  bought: number;
  refunded: number;
  soldOut: number;
}

export interface ShopOptions {
  store: EventStore<ConcertEvent>;
  orders: readonly PlannedOrder[];
  shoppers?: number;
  /** Think time between a shopper's orders, so the run can be watched (and a leader stopped midway). */
  pauseMs?: number;
  /** Called once each order was bought or refused, with the running tally. */
  onOrder?: (tally: ShopTally, order: PlannedOrder) => void;
  /** Called after an order marked `readBack` was bought, with the position its event was written at. */
  readBack?: (order: PlannedOrder, position: number) => Promise<void>;
}

/** Places every order (some refused: sold out), refunds the ones planned, and returns the tally. */
export async function runShop(options: ShopOptions): Promise<ShopTally> {
  const { store, orders } = options;
  const handler = new CommandHandler({ store, decider: concert, retry: { maxAttempts: 20, initialDelayMs: 2, maxDelayMs: 50 } });
  const tally: ShopTally = { placed: 0, bought: 0, refunded: 0, soldOut: 0 };
  const shoppers = options.shoppers ?? 8;
  const pauseMs = options.pauseMs ?? 30;

  const shopper = async (first: number): Promise<void> => {
    for (let i = first; i < orders.length; i += shoppers) {
      const order = orders[i] as PlannedOrder;
      const { orderId, customer, email, quantity } = order;
      let bought;
      try {
        bought = await handler.handle(order.concert, { type: 'BuyTickets', orderId, customer, email, quantity });
        tally.bought++;
      } catch (error) {
        // SOLD_OUT is the decider saying no: a normal answer for a shop. Anything else is a bug.
        if ((error as { code?: unknown }).code !== 'SOLD_OUT') throw error;
        tally.soldOut++;
      }
      tally.placed++;
      options.onOrder?.(tally, order);
      if (bought) {
        if (order.readBack && bought.position !== undefined) await options.readBack?.(order, bought.position);
        if (order.refund) {
          await handler.handle(order.concert, { type: 'RefundOrder', orderId });
          tally.refunded++;
        }
      }
      if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs));
    }
  };
  await Promise.all(Array.from({ length: shoppers }, (_, first) => shopper(first)));
  return tally;
}
