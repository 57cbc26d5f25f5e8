// SIGKILL in the middle of a group commit, shared by test/sqlite/group-commit-kill.test.ts and
// test/postgres/group-commit-kill.test.ts. A writer process (fixtures/group-writer.ts: 16 concurrent
// writers, so its appends go in groups) prints each acknowledged append; after a few hundred the test
// SIGKILLs it, waits until nothing it started can still commit, and checks the log: every acknowledged
// append is there with the positions it was given, every append in the log is whole (all its events,
// adjacent, with consecutive versions), no event is there twice, and every stream reads 1..n. Three
// rounds, a new writer each time on the same database, killed after a different number of appends.
import assert from 'node:assert/strict';
import type { Recorded } from '../../src/core/event.js';
import { ChildNode, fixturePath } from './processes.js';

export type GroupWriterLine =
  | { ev: 'acked'; r: number; w: number; a: number; n: number; stream: string; version: number; positions: number[] }
  | { ev: 'failed'; message: string };

type Acked = Extract<GroupWriterLine, { ev: 'acked' }>;

/** What each event written by the fixture carries: round, writer, the writer's append number, index, count. */
interface Tag {
  r: number;
  w: number;
  a: number;
  k: number;
  n: number;
}

/** The application_name of the fixture's PostgreSQL sessions on a schema (PostgreSQL keeps 63 bytes). */
export function groupWriterApplicationName(schema: string): string {
  return `eskit group writer ${schema}`.slice(0, 63);
}

export interface KillWorld {
  adapter: 'sqlite' | 'postgres';
  /** The database file, or the schema. */
  target: string;
  /** Every event of the log, in position order. */
  readAll(): Promise<Recorded[]>;
  /** Resolves once nothing the killed writer started can still commit. */
  settled(): Promise<void>;
  /** Called with each writer process, for the test to kill if it fails. */
  track(node: ChildNode<GroupWriterLine>): void;
}

export interface RoundReport {
  round: number;
  /** Acknowledgements the test received before the writer died (those it queued in its stdout are lost with it). */
  acknowledged: number;
  /** Appends of this round in the log: the acknowledged ones, and those committed but never acknowledged. */
  committed: number;
  /** Events in the log after the round. */
  events: number;
}

const FIXTURE = fixturePath('./fixtures/group-writer.ts', import.meta.url);
/** Acknowledged appends each round waits for before the kill: a different moment of the writing each time. */
const KILL_AFTER = [200, 350, 500];

const keyOf = (t: { r: number; w: number; a: number }): string => `${t.r}/${t.w}/${t.a}`;

export async function killMidGroups(world: KillWorld): Promise<RoundReport[]> {
  const acked: Acked[] = [];
  const reports: RoundReport[] = [];
  for (const [round, after] of KILL_AFTER.entries()) {
    const node = new ChildNode<GroupWriterLine>(`group writer (${world.adapter}, round ${round})`, FIXTURE, [world.adapter, world.target, String(round)]);
    world.track(node);
    await node.waitFor(() => true, `${after} acknowledged appends`, { from: after - 1, timeoutMs: 60_000 });
    node.kill('SIGKILL');
    const exit = await node.exited;
    assert.equal(exit.signal, 'SIGKILL', `round ${round}: the writer was to be killed, it ended by itself\n${node.output()}`);
    assert.deepEqual(node.find((line) => line.ev === 'failed'), [], `round ${round}: an append failed\n${node.output()}`);
    const mine = node.lines.filter((line): line is Acked => line.ev === 'acked');
    assert.ok(mine.length >= after, `round ${round}: ${mine.length} acknowledged appends`);
    acked.push(...mine);
    await world.settled();
    reports.push(check(await world.readAll(), acked, round));
  }
  return reports;
}

function check(log: Recorded[], acked: readonly Acked[], round: number): RoundReport {
  const where = `after the kill of round ${round}`;
  for (let i = 1; i < log.length; i++) {
    assert.ok((log[i] as Recorded).position > (log[i - 1] as Recorded).position, `${where}: positions increase along the log`);
  }
  assert.equal(new Set(log.map((e) => e.id)).size, log.length, `${where}: an event id is in the log twice`);

  // The log's appends, by tag, with each event's index in the log.
  const appends = new Map<string, { event: Recorded; tag: Tag; at: number }[]>();
  log.forEach((event, at) => {
    const tag = event.data as Tag;
    const key = keyOf(tag);
    const list = appends.get(key) ?? [];
    list.push({ event, tag, at });
    appends.set(key, list);
  });
  for (const [key, events] of appends) {
    const first = events[0] as { event: Recorded; tag: Tag; at: number };
    const n = first.tag.n;
    assert.deepEqual(
      events.map(({ tag }) => [tag.k, tag.n]),
      Array.from({ length: n }, (_, k) => [k, n]),
      `${where}: append ${key} is in the log with events k = ${events.map(({ tag }) => tag.k).join(',')}, not each of its ${n} once`,
    );
    assert.deepEqual(
      events.map(({ event, at }) => [at, event.streamId, event.streamVersion]),
      Array.from({ length: n }, (_, k) => [first.at + k, first.event.streamId, first.event.streamVersion + k]),
      `${where}: append ${key}'s events are adjacent in the log, in one stream, with consecutive versions`,
    );
  }

  const streams = new Map<string, number>();
  for (const event of log) {
    const version = (streams.get(event.streamId) ?? 0) + 1;
    assert.equal(event.streamVersion, version, `${where}: ${event.streamId} reads 1..n (position ${event.position})`);
    streams.set(event.streamId, version);
  }

  for (const line of acked) {
    const key = keyOf(line);
    const events = appends.get(key);
    assert.ok(events !== undefined, `${where}: append ${key}, acknowledged at positions ${line.positions.join(',')}, is not in the log`);
    assert.deepEqual(
      events.map(({ event }) => event.position),
      line.positions,
      `${where}: append ${key} is in the log at other positions than it was acknowledged at`,
    );
    assert.equal(events[0]?.event.streamId, line.stream, `${where}: append ${key}'s stream`);
    assert.equal(events[events.length - 1]?.event.streamVersion, line.version, `${where}: append ${key}'s nextExpectedVersion`);
  }

  return {
    round,
    acknowledged: acked.filter((line) => line.r === round).length,
    committed: [...appends.keys()].filter((key) => key.startsWith(`${round}/`)).length,
    events: log.length,
  };
}
