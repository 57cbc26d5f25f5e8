// The end of a run: read what the log, the view, the mailbox and the dead-letter queue say, check that
// they agree, and print the summary (plus, with --json, one machine-readable line).
import type { DeadLetter, SqlView } from '../../src/index.js';
import type { Backend, MailRow, SalesRow } from './backend.js';
import { CAPACITY } from './domain.js';
import type { ConcertEvent } from './domain.js';
import { isMailerLane, MAILER, undeliverable } from './mailer.js';
import { mailerPartition, partitionReport } from './partitions.js';
import type { PartitionFacts } from './partitions.js';
import type { LeadershipChange } from './processing.js';
import type { PlannedOrder, ShopTally } from './shop.js';
import { SALES_VIEW } from './views.js';

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

/** One period of leadership of one subscription, as the workers reported it. */
export interface Lead {
  name: string;
  worker: number;
  token: number;
  from: number;
  to: number | undefined;
  how: 'released' | 'lost' | undefined;
}

/**
 * Keeps `leads` as worker `worker` reports a change of leadership: a lead opens a period, an end closes
 * it. Returns the lock's token when the worker lost it (rather than let go of it), which is worth saying.
 */
export function recordLeadership(leads: Lead[], worker: number, change: LeadershipChange): number | undefined {
  if (change.kind === 'lead') leads.push({ name: change.name, worker, token: change.token, from: change.at, to: undefined, how: undefined });
  if (change.kind !== 'end') return undefined;
  const lead = leads.find((l) => l.name === change.name && l.token === change.token && l.worker === worker);
  if (lead) Object.assign(lead, { to: change.at, how: change.how });
  return change.how === 'lost' ? change.token : undefined;
}

export interface Handoff {
  name: string;
  from: number;
  to: number;
  token: number;
  /** From the old leader letting go to the new one holding the lock. */
  gapMs: number;
}

export interface RunFacts {
  backend: Backend;
  view: SqlView<ConcertEvent>;
  workers: number;
  seconds: number;
  tally: ShopTally;
  readBacks: ReadBack[];
  /** Transient failures retried (mail server busy), over every process. */
  retried: number;
  leads?: Lead[];
  handoffs?: Handoff[];
  workerExits?: Array<{ worker: number; code: number | null; signal: string | null }>;
  /** `--partitions N` with workers: the mailer's partitions over the workers, before and after the stop. */
  partitions?: PartitionFacts;
  /** `--partitions N` in one process: every partition runs here. */
  partitionCount?: number;
}

export interface ReadBack {
  orderId: string;
  /** From the command's return to `waitFor` resolving. */
  ms: number;
  /** The order's row was in the view right after `waitFor`. */
  visible: boolean;
}

/**
 * Read your own writes: after an order was bought, wait until the view has its event (the position
 * the command returned), read the order's row, and note whether it was there.
 */
export function readBackInto(backend: Backend, view: SqlView<ConcertEvent>, readBacks: ReadBack[]) {
  return async (order: PlannedOrder, position: number): Promise<void> => {
    const before = performance.now();
    await view.waitFor(position, { timeoutMs: 10_000 });
    const ms = performance.now() - before;
    const row = await backend.readOrder(view, order.orderId);
    readBacks.push({ orderId: order.orderId, ms, visible: row?.status === 'bought' });
  };
}

export interface Report {
  ok: boolean;
  checks: Check[];
  result: Record<string, unknown>;
  lines: string[];
}

interface LogTotals {
  events: number;
  bought: Array<{ orderId: string; email: string }>;
  refunded: number;
  sales: Map<string, { sold: number; orders: number }>;
}

async function readLog(backend: Backend): Promise<LogTotals> {
  const totals: LogTotals = { events: 0, bought: [], refunded: 0, sales: new Map() };
  for await (const event of backend.eskit.store.readAll()) {
    totals.events++;
    const row = totals.sales.get(event.streamId) ?? { sold: 0, orders: 0 };
    if (event.type === 'TicketsBought') {
      totals.bought.push({ orderId: event.data.orderId, email: event.data.email });
      row.sold += event.data.quantity;
      row.orders += 1;
    } else {
      totals.refunded++;
      row.sold -= event.data.quantity;
      row.orders -= 1;
    }
    totals.sales.set(event.streamId, row);
  }
  return totals;
}

async function allDeadLetters(backend: Backend): Promise<DeadLetter[]> {
  const letters: DeadLetter[] = [];
  for (let afterId: string | undefined; ; ) {
    const page = await backend.eskit.deadLetters.list({ limit: 100, afterId });
    letters.push(...page);
    if (page.length < 100) return letters;
    afterId = page[page.length - 1]?.id;
  }
}

const percentile = (values: number[], p: number): number => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
};

export async function buildReport(facts: RunFacts): Promise<Report> {
  const { backend, view, tally } = facts;
  const log = await readLog(backend);
  const viewRows: SalesRow[] = (await backend.readSales(view)).map((r) => ({ concert: r.concert, sold: Number(r.sold), orders: Number(r.orders) }));
  const mails: MailRow[] = (await backend.mailbox.rows()).map((m) => ({ ...m, sends: Number(m.sends) }));
  const letters = await allDeadLetters(backend);
  const checks: Check[] = [];
  const check = (name: string, ok: boolean, detail: string): void => void checks.push({ name, ok, detail });

  // The log agrees with what the shoppers were told.
  check(
    'the log holds what the shop reported',
    log.bought.length === tally.bought && log.refunded === tally.refunded,
    `${log.bought.length} TicketsBought and ${log.refunded} TicketsRefunded events; shoppers counted ${tally.bought} and ${tally.refunded}`,
  );

  // The view equals a fold of the log.
  const mismatches: string[] = [];
  const concerts = new Set([...log.sales.keys(), ...viewRows.map((r) => r.concert)]);
  for (const concert of concerts) {
    const expected = log.sales.get(concert) ?? { sold: 0, orders: 0 };
    const actual = viewRows.find((r) => r.concert === concert) ?? { sold: 0, orders: 0 };
    if (expected.sold !== actual.sold || expected.orders !== actual.orders) {
      mismatches.push(`${concert}: view ${actual.sold} tickets/${actual.orders} orders, log ${expected.sold}/${expected.orders}`);
    }
  }
  check('the sales view matches the log', mismatches.length === 0, mismatches.join('; ') || `${concerts.size} concerts, every total equal`);
  const oversold = viewRows.filter((r) => r.sold > CAPACITY);
  check('no concert oversold', oversold.length === 0, oversold.map((r) => `${r.concert} ${r.sold}/${CAPACITY}`).join('; ') || `at most ${CAPACITY} each`);

  const invisible = facts.readBacks.filter((r) => !r.visible);
  check(
    'read-your-writes',
    facts.readBacks.length > 0 && invisible.length === 0,
    invisible.length > 0 ? `not in the view after waitFor: ${invisible.map((r) => r.orderId).join(', ')}` : `${facts.readBacks.length} orders read back right after waitFor`,
  );

  // Every deliverable order has exactly one mail; every undeliverable one is a dead letter.
  const deliverable = new Set(log.bought.filter((o) => !undeliverable(o.email)).map((o) => o.orderId));
  const undeliverableIds = new Set(log.bought.filter((o) => undeliverable(o.email)).map((o) => o.orderId));
  const mailed = new Map(mails.map((m) => [m.orderId, m]));
  const missing = [...deliverable].filter((id) => !mailed.has(id));
  const duplicates = mails.filter((m) => m.sends > 1);
  const unexpected = mails.filter((m) => !deliverable.has(m.orderId));
  check(
    'one confirmation mail per order, none lost, none twice',
    missing.length === 0 && duplicates.length === 0 && unexpected.length === 0,
    [
      `${mails.length} mails for ${deliverable.size} orders with a valid address`,
      missing.length > 0 ? `missing: ${missing.slice(0, 5).join(', ')}` : '',
      duplicates.length > 0 ? `sent more than once: ${duplicates.slice(0, 5).map((m) => `${m.orderId} x${m.sends} (${m.sentBy})`).join(', ')}` : '',
      unexpected.length > 0 ? `unexpected: ${unexpected.slice(0, 5).map((m) => m.orderId).join(', ')}` : '',
    ]
      .filter(Boolean)
      .join('; '),
  );
  // Partitioned, each partition keeps its own letters (source `confirmation-mailer#<p>/<N>`).
  const mailerLetters = letters.filter((l) => isMailerLane(l.source) && l.stage === 'execute');
  const letterKeys = mailerLetters.map((l) => l.key);
  const otherLetters = letters.filter((l) => !(isMailerLane(l.source) && l.stage === 'execute'));
  const sameKeys = letterKeys.length === undeliverableIds.size && letterKeys.every((key) => undeliverableIds.has(key));
  check(
    'undeliverable mails are in the dead-letter queue, once each',
    sameKeys && otherLetters.length === 0,
    `${mailerLetters.length} dead letters for ${undeliverableIds.size} orders to an invalid address` +
      (otherLetters.length > 0 ? `; unexpected letters from ${[...new Set(otherLetters.map((l) => `${l.source}/${l.stage}`))].join(', ')}` : ''),
  );

  // Leadership (workers only): per subscription, leads never overlap, and the stopped leader was replaced.
  const leads = facts.leads ?? [];
  const partitioned = facts.partitions ? partitionReport(facts.partitions, leads) : undefined;
  // The mailer's partitions are checked together (partitions.ts); these are the runners led whole.
  const wholeNames = [...new Set(leads.map((l) => l.name))].filter((name) => mailerPartition(name) === undefined).sort();
  if (facts.workers > 0) {
    for (const name of wholeNames) {
      const periods = leads.filter((l) => l.name === name).sort((a, b) => a.token - b.token);
      const overlaps: string[] = [];
      for (let i = 1; i < periods.length; i++) {
        const before = periods[i - 1] as Lead;
        const after = periods[i] as Lead;
        if (before.to === undefined || before.to > after.from || before.how === 'lost') {
          overlaps.push(`worker ${before.worker} (token ${before.token}) and worker ${after.worker} (token ${after.token})`);
        }
      }
      check(
        `one leader at a time for ${name}`,
        overlaps.length === 0 && periods.length > 0,
        overlaps.length > 0 ? `overlapping: ${overlaps.join('; ')}` : periods.map((p) => `worker ${p.worker} (token ${p.token})`).join(' then '),
      );
    }
    // Partitioned, the worker stopped is the sales view's leader (every worker leads partitions).
    const replaced = partitioned ? SALES_VIEW : MAILER;
    const handoffs = (facts.handoffs ?? []).filter((h) => mailerPartition(h.name) === undefined);
    check(
      'a stopped leader was replaced',
      handoffs.some((h) => h.name === replaced),
      handoffs.map((h) => `${h.name}: worker ${h.from} → worker ${h.to} in ${h.gapMs} ms`).join('; ') || 'no handoff seen',
    );
    if (partitioned) checks.push(...partitioned.checks);
    const exits = facts.workerExits ?? [];
    const unclean = exits.filter((e) => e.code !== 0);
    check(
      'every worker stopped cleanly',
      exits.length === facts.workers && unclean.length === 0,
      unclean.map((e) => `worker ${e.worker} exited with ${e.code ?? e.signal}`).join('; ') || `${exits.length} workers exited with code 0`,
    );
  }

  const ok = checks.every((c) => c.ok);
  const readMs = facts.readBacks.map((r) => r.ms);
  const result = {
    ok,
    backend: backend.config.kind,
    workers: facts.workers,
    seconds: Number(facts.seconds.toFixed(2)),
    orders: { ...tally },
    events: log.events,
    view: Object.fromEntries(viewRows.map((r) => [r.concert, { sold: r.sold, orders: r.orders }])),
    mails: { sent: mails.length, duplicates: duplicates.length, missing: missing.length, retried: facts.retried },
    deadLetters: mailerLetters.length,
    undeliverableOrders: undeliverableIds.size,
    readYourWrites: { checked: facts.readBacks.length, invisible: invisible.length, p50Ms: percentile(readMs, 50), maxMs: Math.max(0, ...readMs) },
    leads: leads.map(({ name, worker, token, from, to, how }) => ({ name, worker, token, from, to: to ?? null, how: how ?? 'held' })),
    handoffs: facts.handoffs ?? [],
    partitions: partitioned?.result ?? (facts.partitionCount ? { count: facts.partitionCount } : null),
    checks,
  };

  const lines: string[] = [];
  const say = (line = ''): void => void lines.push(line);
  say(`Done in ${facts.seconds.toFixed(1)} s on ${backend.label}${facts.workers > 0 ? ` with ${facts.workers} workers` : ''}.`);
  say();
  say(`Orders       ${tally.placed} placed: ${tally.bought} bought, ${tally.soldOut} refused (sold out), ${tally.refunded} refunded afterwards`);
  say(`Event log    ${log.events} events (${log.bought.length} TicketsBought, ${log.refunded} TicketsRefunded) in ${concerts.size} concert streams`);
  say(`Sales view   "${view.name}", read from its table (${view.table('sales')}):`);
  for (const row of viewRows) say(`               ${row.concert.padEnd(14)} ${String(row.sold).padStart(3)}/${CAPACITY} tickets, ${row.orders} open orders`);
  if (facts.readBacks.length > 0) {
    say(`             read-your-writes: ${facts.readBacks.length} orders waited for (waitFor) and read back, p50 ${percentile(readMs, 50).toFixed(1)} ms, max ${Math.max(...readMs).toFixed(1)} ms`);
  }
  say(`Mailer       automation "${MAILER}": ${mails.length} confirmation mails sent (${duplicates.length} twice), ${facts.retried} busy answers retried with backoff`);
  if (facts.partitionCount) say(`             in ${facts.partitionCount} partitions keyed by order id, all in this process (no leader election)`);
  const to = [...new Set(log.bought.filter((o) => undeliverable(o.email)).map((o) => o.email))];
  say(`Dead letters ${mailerLetters.length}: mails to ${to.join(', ') || 'nobody'} failed permanently (no retries)`);
  const example = mailerLetters[0];
  if (example) say(`               e.g. ${example.key}: ${example.attempts.at(-1)?.error ?? ''}`);
  if (facts.workers > 0) {
    say('Leadership');
    for (const name of wholeNames) {
      const chain = leads
        .filter((l) => l.name === name)
        .sort((a, b) => a.token - b.token)
        .map((l) => `worker ${l.worker} (token ${l.token})`)
        .join(' → ');
      say(`             ${name.padEnd(20)} ${chain}`);
    }
    for (const line of partitioned?.lines ?? []) say(line);
  }
  say();
  say(ok ? 'Checks: all passed' : 'Checks: FAILED');
  for (const c of checks) say(`  ${c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}`);
  say();
  say(`Look inside: ${backend.inspect}`);
  return { ok, checks, result, lines };
}
