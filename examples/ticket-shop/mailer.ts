// The confirmation mail: an automation (event → to-do item → side effect) that sends one mail per order
// through a fake mail server. The server is flaky on purpose: now and then it answers "busy" (the
// automation retries with backoff), and one customer's address does not exist (a permanent failure:
// no retries, the item goes to the dead-letter queue for an operator).
import { Automation, PermanentFailure } from '../../src/index.js';
import type { Backend, LockRegistry, Logger } from '../../src/index.js';
import type { ConcertEvent } from './domain.js';

export const MAILER = 'confirmation-mailer';

/** The to-do item's payload: everything the mail needs, taken from the event. */
export interface Confirmation {
  orderId: string;
  to: string;
  concert: string;
  quantity: number;
}

/**
 * Where the fake server delivers: a table counting the mails per order (`demo_mails`), so the demo can
 * prove that every order got its mail exactly once. A real mail server would be an HTTP call.
 */
export interface Mailbox {
  deliver(mail: Confirmation, sentBy: string): Promise<void>;
}

/** A transient failure: thrown as a plain error, so the automation retries it. */
export class MailServerBusy extends Error {
  constructor(to: string) {
    super(`421 mail server busy, try again later (mail to ${to})`);
    this.name = 'MailServerBusy';
  }
}

/** FNV-1a: the same order always gets the same latency and the same number of busy answers. */
function hash(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** How many attempts the server answers "busy" for this order: none for 70 %, one for 20 %, two for 10 %. */
export function busyAnswers(orderId: string): number {
  const roll = hash(orderId) % 10;
  return roll < 7 ? 0 : roll < 9 ? 1 : 2;
}

/** Addresses in the reserved `.invalid` domain can never receive mail. */
export const undeliverable = (address: string): boolean => address.endsWith('.invalid');

export class FakeMailServer {
  /** Attempts answered "busy" (each one retried by the automation). */
  busy = 0;
  /** Attempts refused for good (undeliverable address). */
  rejected = 0;
  sent = 0;

  constructor(
    readonly mailbox: Mailbox,
    /** Names the process that sent a mail, in the mailbox. */
    readonly sentBy: string,
    /**
     * `--dashboard`: whether the server has since created a mailbox for an undeliverable address (then
     * a retry of its dead letter goes through). Without it, such an address never receives mail.
     */
    readonly created?: (address: string) => Promise<boolean>,
  ) {}

  async send(mail: Confirmation, attempt: number): Promise<void> {
    // A few milliseconds per call, like a network round trip.
    await new Promise((resolve) => setTimeout(resolve, 2 + (hash(mail.orderId) % 6)));
    if (undeliverable(mail.to) && !(this.created !== undefined && (await this.created(mail.to)))) {
      this.rejected++;
      throw new PermanentFailure(`550 no such domain: ${mail.to}`);
    }
    if (attempt <= busyAnswers(mail.orderId)) {
      this.busy++;
      throw new MailServerBusy(mail.to);
    }
    await this.mailbox.deliver(mail, this.sentBy);
    this.sent++;
  }
}

export interface MailerOptions {
  /** The database: `sqlite({ path })` or `postgres(...)`, with its dead letters, completions and locks. */
  backend: Backend<ConcertEvent>;
  server: FakeMailServer;
  /** Default: the backend's leader election. */
  leaderLock?: LockRegistry;
  logger?: Logger;
  /** `--partitions N`: split the orders into N partitions, shared out over the workers. */
  partitions?: number;
}

/** A partition of the mailer, e.g. `confirmation-mailer#3/12`: its checkpoint, lock and dead letters carry that name. */
export const isMailerLane = (name: string): boolean => name === MAILER || name.startsWith(`${MAILER}#`);

/** The automation: one to-do item per order bought, keyed by the order id. */
export function confirmationMailer(options: MailerOptions): Automation<ConcertEvent, Confirmation> {
  const { server, partitions, ...rest } = options;
  return new Automation<ConcertEvent, Confirmation>({
    name: MAILER,
    ...rest,
    ...(partitions === undefined
      ? {}
      : {
          partitions,
          // The item key (the order id) is the partition key too, so each order's items stay in one
          // partition, in order. The default, the stream id, would be a concert: three keys in all.
          partitionKey: (event) => (event.type === 'TicketsBought' ? event.data.orderId : event.streamId),
        }),
    types: ['TicketsBought'],
    trigger: (event) => {
      if (event.type !== 'TicketsBought') return undefined;
      const { orderId, email, quantity } = event.data;
      return { key: orderId, payload: { orderId, to: email, concert: event.streamId, quantity } };
    },
    execute: (item, context) => server.send(item.payload, context.attempt),
    concurrency: 8,
    timeoutMs: 5_000,
    // Short waits for a demo; the defaults (200 ms doubling up to 30 s) suit a real mail server.
    retry: { maxAttempts: 5, initialDelayMs: 20, maxDelayMs: 250 },
    pollIntervalMs: 100,
  });
}
