// How far the background work got, read from the database (so it works the same whether the view and
// the mailer run in this process or in workers): checkpoints, mails delivered, dead letters.
import type { Backend } from './backend.js';
import { bar } from './display.js';
import { MAILER } from './mailer.js';
import { mailerPartition } from './partitions.js';
import type { ShopTally } from './shop.js';
import { SALES_VIEW } from './views.js';

export interface Progress {
  head: number;
  /** The checkpoints: every event up to there is in the view / has its mail sent or dead-lettered. */
  viewAt: number;
  mailerAt: number;
  mails: number;
  deadLetters: number;
}

export class ProgressReader {
  current: Progress = { head: 0, viewAt: 0, mailerAt: 0, mails: 0, deadLetters: 0 };
  #reading: Promise<Progress> | undefined;

  /** `partitions`: the mailer runs in that many partitions, each with a checkpoint of its own. */
  constructor(
    readonly backend: Backend,
    readonly partitions?: number,
  ) {}

  /** Reads everything again (one read at a time; a caller during a read shares it). */
  read(): Promise<Progress> {
    this.#reading ??= this.#read().finally(() => (this.#reading = undefined));
    return this.#reading;
  }

  async #read(): Promise<Progress> {
    const { mailbox } = this.backend;
    const { store, checkpoints, deadLetters } = this.backend.eskit;
    const [head, viewAt, mailerAt, mails, letters] = await Promise.all([
      store.headPosition(),
      checkpoints.load(SALES_VIEW),
      this.partitions === undefined ? checkpoints.load(MAILER) : this.#lowestPartition(this.partitions),
      mailbox.count(),
      // Partitioned, each partition has its own letters: count them all (only the mailer makes any).
      this.partitions === undefined ? deadLetters.count({ source: MAILER }) : deadLetters.count(),
    ]);
    this.current = { head, viewAt: viewAt ?? 0, mailerAt: mailerAt ?? 0, mails, deadLetters: letters };
    return this.current;
  }

  /** Every event up to the lowest partition checkpoint has its mail (a partition not yet run counts as 0). */
  async #lowestPartition(count: number): Promise<number> {
    const positions = new Map<number, number>();
    for (const checkpoint of await this.backend.eskit.checkpoints.list()) {
      const partition = mailerPartition(checkpoint.name);
      if (partition !== undefined && checkpoint.name.endsWith(`/${count}`)) positions.set(partition, checkpoint.position);
    }
    return positions.size < count ? 0 : Math.min(...positions.values());
  }
}

/** The position of the last TicketsBought event: the mailer is done once its checkpoint reaches it. */
export async function lastBoughtPosition(backend: Backend): Promise<number> {
  let last = 0;
  for await (const event of backend.eskit.store.readAll({ types: ['TicketsBought'], raw: true })) last = event.position;
  return last;
}

/** The live status block shared by both modes. */
export function statusLines(total: number, tally: ShopTally, progress: Progress, retried: number, extra: string[] = []): string[] {
  const { head, viewAt, mails, deadLetters } = progress;
  return [
    `  orders  ${bar(total === 0 ? 1 : tally.placed / total)} ${String(tally.placed).padStart(4)}/${total}  bought ${tally.bought}, refunded ${tally.refunded}, sold out ${tally.soldOut}`,
    `  view    at event ${viewAt}/${head}   mails ${mails} sent, ${retried} retried, ${deadLetters} dead-lettered`,
    ...extra,
  ];
}
