// Adapter micro-benchmark against raw better-sqlite3 in the same run (not part of `npm test`).
// Run: npx tsx test/sqlite/bench.ts
import Database from 'better-sqlite3';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { v7 as uuidv7 } from 'uuid';
import { SqliteEventStore } from '../../src/sqlite/index.js';

const dir = tmpdir();
const file = (name: string) => join(dir, `eskit-bench-${process.pid}-${name}.db`);
const remove = (path: string) => {
  for (const suffix of ['', '-wal', '-shm']) rmSync(path + suffix, { force: true });
};
const data = { sku: 'abc-123', quantity: 2, price: 1999, note: 'a short note about the item' };
const metadata = { correlationId: '0190b3b4-8a3e-7d7e-9e4b-6f1f2b3c4d5e' };

async function appendBench(rounds: number, batch: number) {
  const rawPath = file('raw');
  const storePath = file('store');
  remove(rawPath);
  remove(storePath);
  const store = new SqliteEventStore({ path: storePath });
  const raw = new Database(rawPath);
  raw.pragma('journal_mode = WAL');
  raw.pragma('synchronous = NORMAL');
  raw.exec(
    'CREATE TABLE e (position INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE, stream_id TEXT NOT NULL, stream_version INTEGER NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL, metadata TEXT NOT NULL, created_at INTEGER NOT NULL, UNIQUE (stream_id, stream_version)); CREATE INDEX e_type ON e (type, position);',
  );
  const insert = raw.prepare('INSERT INTO e (event_id, stream_id, stream_version, type, data, metadata, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)');
  const versions = new Map<string, number>();
  const rawAppend = raw.transaction((stream: string) => {
    const version = (versions.get(stream) ?? 0) + 1;
    versions.set(stream, version);
    insert.run(uuidv7(), stream, version, 'ItemAdded', JSON.stringify(data), JSON.stringify(metadata), Date.now());
  });
  let rawNs = 0;
  let storeNs = 0;
  for (let r = 0; r < rounds; r++) {
    // Alternate which goes first so drift in machine load hits both alike.
    const runRaw = () => {
      const t = process.hrtime.bigint();
      for (let i = 0; i < batch; i++) rawAppend.immediate(`s-${(r * batch + i) % 1000}`);
      return Number(process.hrtime.bigint() - t);
    };
    const runStore = async () => {
      const t = process.hrtime.bigint();
      for (let i = 0; i < batch; i++) await store.append(`s-${(r * batch + i) % 1000}`, [{ type: 'ItemAdded', data, metadata }]);
      return Number(process.hrtime.bigint() - t);
    };
    let a: number;
    let b: number;
    if (r % 2 === 0) {
      a = runRaw();
      b = await runStore();
    } else {
      b = await runStore();
      a = runRaw();
    }
    if (r > 1) {
      rawNs += a;
      storeNs += b;
    }
  }
  const n = (rounds - 2) * batch;
  console.log(
    `append 1/tx: raw ${Math.round(n / (rawNs / 1e9))}/s, store ${Math.round(n / (storeNs / 1e9))}/s, ratio ${(rawNs / storeNs).toFixed(2)}`,
  );
  raw.close();
  return { store, storePath, rawPath };
}

async function batchBench(rounds: number, size: number) {
  const rawPath = file('raw-batch');
  const storePath = file('store-batch');
  remove(rawPath);
  remove(storePath);
  const store = new SqliteEventStore({ path: storePath });
  const raw = new SqliteEventStore({ path: rawPath }).database; // same schema, written directly
  const insert = raw.prepare('INSERT INTO eskit_events (event_id, stream_id, stream_version, type, data, metadata, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)');
  const version = raw.prepare('SELECT COALESCE(MAX(stream_version), 0) FROM eskit_events WHERE stream_id = ?').pluck();
  const rawBatch = raw.transaction((stream: string) => {
    const current = version.get(stream) as number;
    const now = Date.now();
    for (let i = 0; i < size; i++) insert.run(uuidv7(), stream, current + i + 1, 'ItemAdded', JSON.stringify(data), JSON.stringify(metadata), now);
  });
  const events = Array.from({ length: size }, () => ({ type: 'ItemAdded', data, metadata }));
  let rawNs = 0;
  let storeNs = 0;
  for (let r = 0; r < rounds; r++) {
    let t = process.hrtime.bigint();
    rawBatch.immediate(`s-${r % 50}`);
    const a = Number(process.hrtime.bigint() - t);
    t = process.hrtime.bigint();
    await store.append(`s-${r % 50}`, events);
    const b = Number(process.hrtime.bigint() - t);
    if (r > 5) {
      rawNs += a;
      storeNs += b;
    }
  }
  const n = (rounds - 6) * size;
  console.log(`append ${size}/call: raw ${Math.round(n / (rawNs / 1e9))}/s, store ${Math.round(n / (storeNs / 1e9))}/s, ratio ${(rawNs / storeNs).toFixed(2)}`);
  raw.close();
  await store.close();
  remove(rawPath);
  remove(storePath);
}

async function readBench(store: SqliteEventStore, repeats: number) {
  const db = new Database(store.database.name, { readonly: true });
  const page = db.prepare('SELECT position, event_id, stream_id, stream_version, type, data, metadata, created_at FROM eskit_events WHERE position > ? ORDER BY position LIMIT ?');
  const rawRead = () => {
    let after = 0;
    let count = 0;
    for (;;) {
      const rows = page.all(after, 500) as { position: number; data: string; metadata: string }[];
      for (const row of rows) {
        JSON.parse(row.data);
        JSON.parse(row.metadata);
        count++;
      }
      if (rows.length < 500) return count;
      after = (rows[rows.length - 1] as { position: number }).position;
    }
  };
  const storeRead = async () => {
    let count = 0;
    for await (const event of store.readAll()) if (event.position > 0) count++;
    return count;
  };
  let rawNs = 0;
  let storeNs = 0;
  let events = 0;
  for (let r = 0; r < repeats; r++) {
    let t = process.hrtime.bigint();
    events = rawRead();
    const a = Number(process.hrtime.bigint() - t);
    t = process.hrtime.bigint();
    const count = await storeRead();
    const b = Number(process.hrtime.bigint() - t);
    if (count !== events) throw new Error(`read ${count} events, expected ${events}`);
    if (r > 0) {
      rawNs += a;
      storeNs += b;
    }
  }
  const n = (repeats - 1) * events;
  console.log(`readAll: raw ${Math.round(n / (rawNs / 1e9))}/s, store ${Math.round(n / (storeNs / 1e9))}/s, ratio ${(rawNs / storeNs).toFixed(2)}`);
  db.close();
}

const { store, storePath, rawPath } = await appendBench(Number(process.argv[2] ?? 60), 500);
await readBench(store, 6);
await batchBench(300, 100);
await store.close();
remove(storePath);
remove(rawPath);
