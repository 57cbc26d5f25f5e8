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

/**
 * `--dashboard`: orders per concert night. 80 orders a concert of 1 to 4 tickets each (200 on average)
 * fit its 240 seats, so the next night's concerts (`concert-jazz-2`, ...) open before one sells out,
 * and the events keep coming.
 */
export const ORDERS_PER_NIGHT = 240;

/** `--dashboard`: the index-th order of an endless stream. Mallory orders once, the 18th order, so one dead letter. */
export function liveOrder(index: number): PlannedOrder {
  const name = NAMES[index % NAMES.length] as string;
  const night = Math.floor(index / ORDERS_PER_NIGHT);
  const genre = CONCERTS[index % CONCERTS.length] as string;
  return {
    index,
    orderId: `order-${String(index + 1).padStart(6, '0')}`,
    concert: night === 0 ? genre : `${genre}-${night + 1}`,
    ...(index === 17 ? MALLORY : { customer: name, email: `${name}@example.com` }),
    quantity: 1 + ((index * 7) % 4),
    refund: index % 7 === 3,
    readBack: false,
  };
}

export interface LiveShopOptions {
  store: EventStore<ConcertEvent>;
  /** Orders a second, placed one after another at that pace. */
  perSecond: number;
  /** Ends the shopping (the order being placed is finished first). */
  signal: AbortSignal;
  onOrder?: (tally: ShopTally, order: PlannedOrder) => void;
}

/** `--dashboard`: places orders at a steady pace (refunding the ones planned) until `signal` aborts. */
export async function runLiveShop(options: LiveShopOptions): Promise<ShopTally> {
  const { store, signal } = options;
  const handler = new CommandHandler({ store, decider: concert, retry: { maxAttempts: 20, initialDelayMs: 2, maxDelayMs: 50 } });
  const tally: ShopTally = { placed: 0, bought: 0, refunded: 0, soldOut: 0 };
  const started = performance.now();
  for (let index = 0; !signal.aborted; index++) {
    const order = liveOrder(index);
    const { orderId, customer, email, quantity } = order;
    let bought = false;
    try {
      await handler.handle(order.concert, { type: 'BuyTickets', orderId, customer, email, quantity });
      tally.bought++;
      bought = true;
    } catch (error) {
      if ((error as { code?: unknown }).code !== 'SOLD_OUT') throw error;
      tally.soldOut++;
    }
    if (bought && order.refund) {
      await handler.handle(order.concert, { type: 'RefundOrder', orderId });
      tally.refunded++;
    }
    tally.placed++;
    options.onOrder?.(tally, order);
    // The next order at its time on the clock, so the pace holds however long an order took.
    const waitMs = started + ((index + 1) * 1000) / options.perSecond - performance.now();
    if (waitMs > 0 && !signal.aborted) await sleep(waitMs, signal);
  }
  return tally;
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
