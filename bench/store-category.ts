// store.readCategory.postgres: reading one small category of a large log, eskit beside the raw indexed
// query on the same table.
//
// The log holds ten categories: 'order' is 1% of it (every 100th event), the nine others share the
// rest. The rows are written with one INSERT .. SELECT (a million appends would take the run's time,
// and the read does not care how a row got there), then VACUUM ANALYZE. An op reads the whole 'order'
// category in pages of PAGE_SIZE: eskit through readAll({ category }), the baseline with the same keyset
// query on the category's expression index (unnamed, as eskit sends it, so it is planned for the
// category), rows as arrays, jsonb parsed. What the figure shows: the category costs its own events,
// not the log's (a scan that filtered would read 100 times the rows).
import pg from 'pg';
import { PostgresEventStore } from '../src/postgres/index.js';
import type { BenchContext } from './lib/context.js';
import { sequential } from './lib/measure.js';

const PAGE_SIZE = 500;
const SHARE = 100;
const FIGURE = 'store.readCategory.postgres';

export async function readCategoryFigure(ctx: BenchContext): Promise<void> {
  if (!ctx.selected(FIGURE)) return;
  const schema = `bench_category_${process.pid}`;
  const pool = new pg.Pool({ connectionString: ctx.postgresUrl, max: 2, connectionTimeoutMillis: 5000 });
  pool.on('error', () => undefined);
  const store = new PostgresEventStore({ pool, schema, pageSize: PAGE_SIZE });
  const close = ctx.defer(async () => {
    await store.close();
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => undefined);
    await pool.end();
  });
  try {
    await store.migrate();
    const total = ctx.pick(100_000, 1_000_000);
    const wanted = total / SHARE;
    const s = `"${schema}"`;
    ctx.log(`postgres: writing ${total} events in ten categories, 1% of them 'order'`);
    await pool.query(
      `INSERT INTO ${s}.events (position, id, stream_id, stream_version, type, data, metadata, created_at)
       SELECT i, gen_random_uuid(),
              (CASE WHEN i % ${SHARE} = 0 THEN 'order' ELSE 'cat' || (i % 9) END) || '-' || (i / 10), 1 + i % 10,
              'ItemAdded', jsonb_build_object('sku', 'sku-' || i, 'quantity', i % 7), '{"correlationId":"c"}', now()
         FROM generate_series(1, ${total}) AS i`,
    );
    await pool.query(`SELECT setval('${s}.events_position', ${total})`);
    await pool.query(`VACUUM ANALYZE ${s}.events`);

    const columns = 'position, id, stream_id, stream_version, type, data, metadata, created_at';
    const text = `SELECT ${columns} FROM ${s}.events WHERE split_part(stream_id, '-', 1) = $1 AND position > $2 ORDER BY position LIMIT $3`;
    const raw = async (): Promise<number> => {
      let n = 0;
      let after = '0';
      for (;;) {
        const { rows } = await pool.query<unknown[]>({ text, rowMode: 'array', values: ['order', after, PAGE_SIZE] });
        n += rows.length;
        if (rows.length < PAGE_SIZE) return n;
        after = String((rows[rows.length - 1] as unknown[])[0]);
      }
    };
    const eskit = async (): Promise<number> => {
      let n = 0;
      for await (const _event of store.readAll({ category: 'order' })) n++;
      return n;
    };
    const checked = (side: string, read: () => Promise<number>) => async (): Promise<number> => {
      const n = await read();
      if (n !== wanted) throw new Error(`${side} read ${n} events of the category, expected ${wanted}`);
      return n;
    };
    await ctx.measure({
      bench: FIGURE,
      unit: 'events/s',
      ops: ctx.pick(5, 10),
      warmupOps: 1,
      rounds: ctx.pick(3, 7),
      eskit: sequential(checked('eskit', eskit)),
      baseline: sequential(checked('baseline', raw)),
      baselineLabel: 'pg: keyset pages on the category index, array rows, jsonb parsed',
      target: 0.8,
      note: `op = one read of the ${wanted} events of a category that is 1% of a ${total}-event log (p50/p99 per read); page size ${PAGE_SIZE} on both sides`,
    });
  } finally {
    await close();
  }
}
