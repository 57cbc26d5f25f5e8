// store.append.encrypted.postgres and store.readAll.encrypted.postgres: what personal data costs.
// The same events through eskit twice, in two schemas of one database: with two personal fields per
// event (encrypted on append with the subject's AES-256-GCM key, opened on read) and without (the
// baseline). Subjects cycle over SUBJECTS customers, so after the first event of each the keys come
// from the store's key cache, as in a service where a person has many events; the first append of a
// subject also creates its key (one more round trip), which the rounds include.
import pg from 'pg';
import { EventRegistry } from '../src/core/registry.js';
import { PostgresEventStore } from '../src/postgres/index.js';
import type { BenchContext } from './lib/context.js';
import { sequential } from './lib/measure.js';

type CustomerEvent = { type: 'CustomerUpdated'; data: { customerId: string; email: string; name: string; plan: string; visits: number } };

const SUBJECTS = 100;
const PAGE_SIZE = 500;
const APPEND = 'store.append.encrypted.postgres';
const READ_ALL = 'store.readAll.encrypted.postgres';

const event = (i: number): { type: 'CustomerUpdated'; data: CustomerEvent['data'] } => ({
  type: 'CustomerUpdated',
  data: { customerId: `c${i % SUBJECTS}`, email: `person${i}@example.com`, name: `Person Number ${i}`, plan: 'pro', visits: i },
});

export async function encryptedFigures(ctx: BenchContext): Promise<void> {
  if (!ctx.selected(APPEND) && !ctx.selected(READ_ALL)) return;
  const pool = new pg.Pool({ connectionString: ctx.postgresUrl, max: 4, connectionTimeoutMillis: 5000 });
  pool.on('error', () => undefined);
  const personal = new EventRegistry<CustomerEvent>({ CustomerUpdated: { personal: { subject: (data) => data.customerId, fields: ['email', 'name'] } } });
  const plain = new EventRegistry<CustomerEvent>({ CustomerUpdated: {} });
  const schemas = [`bench_encrypted_${process.pid}`, `bench_plain_${process.pid}`];
  const encrypted = new PostgresEventStore<CustomerEvent>({ pool, schema: schemas[0] as string, registry: personal, pageSize: PAGE_SIZE });
  const clear = new PostgresEventStore<CustomerEvent>({ pool, schema: schemas[1] as string, registry: plain, pageSize: PAGE_SIZE });
  const close = ctx.defer(async () => {
    await Promise.all([encrypted.close(), clear.close()]);
    for (const schema of schemas) await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => undefined);
    await pool.end();
  });
  try {
    await encrypted.migrate();
    await clear.migrate();
    const rounds = ctx.pick(3, 7);
    let n = 0;
    await ctx.measure({
      bench: APPEND,
      unit: 'events/s',
      ops: ctx.pick(300, 1500),
      rounds,
      eskit: sequential(async () => (await encrypted.append(`customer-${n}`, [event(n++)])).events.length),
      baseline: sequential(async () => (await clear.append(`customer-${n}`, [event(n++)])).events.length),
      baselineLabel: 'eskit: the same events without personal fields',
      note: `op = one append of one event with 2 personal fields of one of ${SUBJECTS} subjects; ratio = encrypted / plain`,
    });

    const total = ctx.pick(10_000, 20_000);
    ctx.log(`postgres: seeding ${total} events on each side (encrypted and plain)`);
    for (const store of [encrypted, clear]) {
      for (let written = 0; written < total; written += PAGE_SIZE) {
        await store.append(`read-${written}`, Array.from({ length: PAGE_SIZE }, (_, i) => event(written + i)));
      }
    }
    const readEvery = (store: PostgresEventStore<CustomerEvent>) => async (): Promise<number> => {
      let count = 0;
      let sample = '';
      for await (const read of store.readAll({ category: 'read' })) {
        count++;
        sample = read.data.email;
      }
      // A read that did not decrypt would make the encrypted side look fast for the wrong reason.
      if (count !== total || !sample.endsWith('@example.com')) throw new Error(`read ${count} events (expected ${total}), last email ${sample}`);
      return count;
    };
    await ctx.measure({
      bench: READ_ALL,
      unit: 'events/s',
      ops: ctx.pick(3, 6),
      warmupOps: 1,
      rounds,
      eskit: sequential(readEvery(encrypted)),
      baseline: sequential(readEvery(clear)),
      baselineLabel: 'eskit: the same events without personal fields',
      note: `op = one typed readAll of ${total} events, 2 personal fields each (decrypted), over ${SUBJECTS} subjects' keys; ratio = encrypted / plain`,
    });
  } finally {
    await close();
  }
}
