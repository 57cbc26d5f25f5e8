// Rough throughput of the PostgreSQL adapter against the raw driver, in the same run. Not a test.
//   npx tsx test/postgres/bench.ts [--rounds 7] [--ms 500] [--async-commit]
// --async-commit runs with synchronous_commit = off (for both sides), which takes the WAL flush out of
// the picture and shows the CPU and round-trip cost alone.
// Rounds alternate raw and eskit so that noise from other processes hits both alike; medians are shown.
import pg from 'pg';
import { v7 as uuidv7 } from 'uuid';
import { PostgresEventStore } from '../../src/postgres/index.js';
import { createTestSchema, POSTGRES_URL } from '../support/postgres.js';

const args = process.argv.slice(2);
const option = (name: string, fallback: number): number => {
  const index = args.indexOf(`--${name}`);
  return index >= 0 ? Number(args[index + 1]) : fallback;
};
const ROUNDS = option('rounds', 7);
const MS = option('ms', 500);

const data = JSON.stringify({ sku: 'abc-123', quantity: 3, price: 12.5, note: 'a small, typical event payload' });
const metadata = JSON.stringify({ correlationId: uuidv7(), causationId: uuidv7() });

const schema = await createTestSchema({ create: false, poolSize: 2 });
const asyncCommit = args.includes('--async-commit');
const pool = new pg.Pool({ connectionString: POSTGRES_URL, max: 10, options: asyncCommit ? '-c synchronous_commit=off' : undefined });
const store = new PostgresEventStore({ pool, schema: schema.name });
await store.migrate();
const s = `"${schema.name}"`;
await pool.query(`CREATE TABLE ${s}.raw_events (
  position bigserial PRIMARY KEY, id uuid NOT NULL UNIQUE, stream_id text NOT NULL, stream_version bigint NOT NULL,
  type text NOT NULL, data jsonb NOT NULL, metadata jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (stream_id, stream_version))`);

let streamCounter = 0;
const newStream = (): string => `bench-${++streamCounter}`;

/** Runs `op` back to back on `writers` concurrent loops for MS milliseconds; returns events per second. */
async function rate(writers: number, eventsPerOp: number, op: (stream: string, version: number) => Promise<unknown>): Promise<number> {
  let events = 0;
  const start = performance.now();
  const end = start + MS;
  await Promise.all(
    Array.from({ length: writers }, async () => {
      const stream = newStream();
      let version = 0;
      while (performance.now() < end) {
        await op(stream, version);
        version += eventsPerOp;
        events += eventsPerOp;
      }
    }),
  );
  return events / ((performance.now() - start) / 1000);
}

function rawInsert(n: number): (stream: string, version: number) => Promise<unknown> {
  const rows = Array.from({ length: n }, (_, i) => `($${i * 5 + 1}, $${i * 5 + 2}, $${i * 5 + 3}, 'Bench', $${i * 5 + 4}, $${i * 5 + 5})`);
  const text = `INSERT INTO ${s}.raw_events (id, stream_id, stream_version, type, data, metadata) VALUES ${rows.join(', ')}`;
  return (stream, version) => {
    const values: unknown[] = [];
    for (let i = 0; i < n; i++) values.push(uuidv7(), stream, version + i + 1, data, metadata);
    return pool.query({ name: `raw_insert_${n}`, text, values });
  };
}

function eskitAppend(n: number): (stream: string, version: number) => Promise<unknown> {
  const parsed = JSON.parse(data) as unknown;
  const meta = JSON.parse(metadata) as Record<string, unknown>;
  return (stream, version) =>
    store.append(stream, Array.from({ length: n }, () => ({ type: 'Bench', data: parsed, metadata: meta })), { expectedVersion: version });
}

async function rawScan(): Promise<number> {
  let after = 0;
  let count = 0;
  const start = performance.now();
  for (;;) {
    const page = await pool.query<{ position: string }>({
      name: 'raw_scan',
      text: `SELECT * FROM ${s}.raw_events WHERE position > $1 ORDER BY position LIMIT 500`,
      values: [after],
    });
    count += page.rows.length;
    if (page.rows.length < 500) break;
    after = Number(page.rows[page.rows.length - 1]!.position);
  }
  return count / ((performance.now() - start) / 1000);
}

async function eskitScan(): Promise<number> {
  let count = 0;
  const start = performance.now();
  for await (const _ of store.readAll()) count++;
  return count / ((performance.now() - start) / 1000);
}

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

async function compare(label: string, raw: () => Promise<number>, eskit: () => Promise<number>): Promise<void> {
  const raws: number[] = [];
  const ours: number[] = [];
  const ratios: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const r = await raw();
    const e = await eskit();
    raws.push(r);
    ours.push(e);
    ratios.push(e / r);
  }
  console.log(
    `${label.padEnd(34)} raw ${Math.round(median(raws)).toString().padStart(7)}/s   eskit ${Math.round(median(ours)).toString().padStart(7)}/s   ratio ${median(ratios).toFixed(2)}`,
  );
}

/**
 * One writer doing raw and eskit operations in turn, one by one, so that load from other processes falls
 * on both alike. Reports throughput from the summed durations, and the median latency of each.
 */
async function interleaved(label: string, eventsPerOp: number, raw: (stream: string, version: number) => Promise<unknown>, eskit: (stream: string, version: number) => Promise<unknown>): Promise<void> {
  const rawStream = newStream();
  const eskitStream = newStream();
  const durations: [number[], number[]] = [[], []];
  const end = performance.now() + MS * ROUNDS;
  for (let version = 0; performance.now() < end; version += eventsPerOp) {
    let t = performance.now();
    await raw(rawStream, version);
    durations[0].push(performance.now() - t);
    t = performance.now();
    await eskit(eskitStream, version);
    durations[1].push(performance.now() - t);
  }
  const [rawRate, eskitRate] = durations.map((d) => (d.length * eventsPerOp * 1000) / d.reduce((a, b) => a + b, 0)) as [number, number];
  const [rawP50, eskitP50] = durations.map((d) => (median(d) * 1000).toFixed(0)) as [string, string];
  console.log(
    `${label.padEnd(34)} raw ${Math.round(rawRate).toString().padStart(7)}/s   eskit ${Math.round(eskitRate).toString().padStart(7)}/s   ratio ${(eskitRate / rawRate).toFixed(2)}   (p50 ${rawP50} vs ${eskitP50} µs)`,
  );
}

console.log(`PostgreSQL adapter bench: medians (events per second), synchronous_commit ${asyncCommit ? 'off' : 'on'}`);
await interleaved('append, 1 event per call', 1, rawInsert(1), eskitAppend(1));
await interleaved('append, 100 events per call', 100, rawInsert(100), eskitAppend(100));
await compare('append, 1 event, 8 writers', () => rate(8, 1, rawInsert(1)), () => rate(8, 1, eskitAppend(1)));

// The same rows in both tables for the scans.
const target = 20_000;
await pool.query(`TRUNCATE ${s}.events, ${s}.raw_events`);
for (let n = 0; n < target; n += 500) {
  await eskitAppend(500)(newStream(), 0);
  await rawInsert(500)(newStream(), 0);
}
await compare(`readAll, ${target} events`, rawScan, eskitScan);

// What serialising appends costs: raw INSERTs gain from concurrent writers (group commit), eskit does not.
const scaling: string[] = [];
for (const writers of [1, 2, 4, 8]) {
  const raws: number[] = [];
  const ours: number[] = [];
  for (let round = 0; round < Math.max(3, Math.floor(ROUNDS / 2)); round++) {
    raws.push(await rate(writers, 1, rawInsert(1)));
    ours.push(await rate(writers, 1, eskitAppend(1)));
  }
  scaling.push(`${writers} writer${writers > 1 ? 's' : ''}: eskit ${Math.round(median(ours))}/s, raw ${Math.round(median(raws))}/s`);
}
console.log(`throughput by concurrent writers (1 event per call):\n  ${scaling.join('\n  ')}`);

await store.close();
await pool.end();
await schema.drop();
