import type { Recorded } from '../../core/event.js';
import type { EventStore } from '../../core/store.js';
import { CliError, ExitCode, UsageError } from '../errors.js';
import type { CommandSpec } from '../command.js';
import { flag, integerOption, stringsOption } from '../command.js';
import { check } from './events-check.js';
import { printable } from '../personal-fields.js';

/**
 * One line per event: position, stream@version, type, time, data as JSON. Events are read raw, so a
 * personal field is its stored envelope: it prints as "[personal]".
 */
export function eventLine(event: Recorded, asJson: boolean): string {
  const data = printable(event.data);
  if (asJson) {
    const { position, streamId, streamVersion, id, type, timestamp, metadata } = event;
    return `${JSON.stringify({ position, streamId, streamVersion, id, type, timestamp, data, metadata })}\n`;
  }
  return `${event.position}  ${event.streamId}@${event.streamVersion}  ${event.type}  ${event.timestamp.toISOString()}  ${JSON.stringify(data)}\n`;
}

const read: CommandSpec = {
  name: 'events read',
  summary: 'the events of one stream',
  help: `Usage: eskit events read <stream> [--from <version>] [--limit <n>] [--backward] [--archived] [--json]

Prints a stream's events, one per line:

  <position>  <stream>@<version>  <type>  <time>  <data as JSON>

Events are printed as stored (no registry, no upcasting); personal fields print as "[personal]" (the
CLI never decrypts them). Exit 1 when the stream has no events.

Options:
  --from <version>   start at this stream version (default: the first, or the last with --backward)
  --limit <n>        at most n events
  --backward         newest first
  --archived         the stream's events in the archive (eskit streams archive), in version order
  --json             one JSON object per line (position, streamId, streamVersion, id, type,
                     timestamp, data, metadata)
`,
  options: { from: { type: 'string' }, limit: { type: 'string' }, backward: { type: 'boolean' }, archived: { type: 'boolean' }, json: { type: 'boolean' } },
  positionals: { min: 1, max: 1, names: '<stream>' },
  async run(context) {
    const stream = context.args[0] as string;
    const fromVersion = integerOption(context.values, 'from', { min: 1 });
    const limit = integerOption(context.values, 'limit', { min: 1 });
    const asJson = flag(context.values, 'json');
    const db = await context.open();
    if (flag(context.values, 'archived')) {
      if (flag(context.values, 'backward')) throw new UsageError('--archived reads in version order: leave out --backward');
      let printed = 0;
      for await (const event of db.store.readArchived(stream, { raw: true })) {
        if (context.signal.aborted || (limit !== undefined && printed >= limit)) break;
        if (fromVersion !== undefined && event.streamVersion < fromVersion) continue;
        context.out(eventLine(event, asJson));
        printed += 1;
      }
      if (printed === 0) throw new CliError(`no archived events of stream "${stream}"`, { hint: 'Only streams archived with `eskit streams archive` (or archiveStream) have any.' });
      return ExitCode.Ok;
    }
    const version = await db.store.streamVersion(stream);
    if (version === 0) {
      const archived = await firstArchived(db.store, stream);
      throw new CliError(`no stream "${stream}" (it has no events${archived ? ': it was archived' : ''})`, {
        hint: archived ? `Read it from the archive: eskit events read ${stream} --archived` : 'Stream ids are case-sensitive; `eskit events tail --from 1 --no-follow` lists the whole log.',
      });
    }
    const direction = flag(context.values, 'backward') ? 'backward' : 'forward';
    for await (const event of db.store.readStream(stream, { fromVersion, limit, direction, raw: true })) {
      if (context.signal.aborted) break;
      context.out(eventLine(event, asJson));
    }
    return ExitCode.Ok;
  },
};

/** Whether the stream has events in the archive. */
async function firstArchived(store: EventStore, stream: string): Promise<boolean> {
  for await (const _event of store.readArchived(stream, { raw: true })) return true;
  return false;
}

/** Resolves after `ms`, or at once when woken or aborted. */
function pause(ms: number, signal: AbortSignal, onWake: (wake: (() => void) | undefined) => void): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      onWake(undefined);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
    onWake(done);
  });
}

/**
 * Prints the events after `after` and then follows the log: it wakes on the store's append hint
 * (LISTEN/NOTIFY on PostgreSQL) and polls every `intervalMs` as well (SQLite only hears its own
 * process's appends, and a notification can be lost). Returns when `limit` events were printed, the
 * signal fires, or (without `follow`) the log is read to its end.
 */
export async function followLog(
  store: EventStore,
  options: {
    after: number;
    types: readonly string[] | undefined;
    category?: string | undefined;
    limit: number | undefined;
    follow: boolean;
    intervalMs: number;
    signal: AbortSignal;
  },
  emit: (event: Recorded) => void,
): Promise<number> {
  const { types, category, limit, signal } = options;
  let after = options.after;
  let printed = 0;
  let woken = false;
  let wake: (() => void) | undefined;
  const unsubscribe = options.follow
    ? store.onAppend(() => {
        woken = true;
        wake?.();
      })
    : () => undefined;
  const pageSize = 500;
  try {
    while (!signal.aborted) {
      woken = false;
      // Every event up to this head is visible now, so none can appear at or before it later: with a
      // filter, the next read can start after it even when no event it keeps was there.
      const head = types === undefined && category === undefined ? undefined : await store.headPosition();
      let read = 0;
      for await (const event of store.readAll({ after, limit: pageSize, types, category, raw: true })) {
        emit(event);
        after = event.position;
        read += 1;
        printed += 1;
        if (limit !== undefined && printed >= limit) return printed;
      }
      if (read === pageSize) continue;
      if (head !== undefined) after = Math.max(after, head);
      if (!options.follow) return printed;
      if (woken) continue;
      await pause(options.intervalMs, signal, (next) => (wake = next));
    }
    return printed;
  } finally {
    unsubscribe();
  }
}

const tail: CommandSpec = {
  name: 'events tail',
  summary: 'follow the log live (Ctrl-C to stop)',
  help: `Usage: eskit events tail [--from <position>] [--type <type>]... [--category <name>] [--limit <n>] [--no-follow] [--json]

Follows the global log and prints each new event as it is appended, one per line, until Ctrl-C:

  <position>  <stream>@<version>  <type>  <time>  <data as JSON>

It wakes on append notifications (LISTEN/NOTIFY on PostgreSQL) and polls as well (on SQLite,
polling is how it sees other processes' appends). Events are printed as stored; personal fields print
as "[personal]" (the CLI never decrypts them).

Options:
  --from <position>   first print the events from this global position on (1: the whole log);
                      default: only events appended from now on
  --type <type>       only events of this type (repeatable)
  --category <name>   only streams of this category: the stream id up to its first '-'
                      (order for order-42)
  --limit <n>         exit after n events
  --no-follow         exit at the end of the log instead of following (needs --from)
  --interval <ms>     how often to poll (default 500)
  --json              one JSON object per line
`,
  options: {
    from: { type: 'string' },
    type: { type: 'string', multiple: true },
    category: { type: 'string' },
    limit: { type: 'string' },
    'no-follow': { type: 'boolean' },
    interval: { type: 'string' },
    json: { type: 'boolean' },
  },
  positionals: { min: 0, max: 0, names: '' },
  async run(context) {
    const from = integerOption(context.values, 'from', { min: 1 });
    const limit = integerOption(context.values, 'limit', { min: 1 });
    const intervalMs = integerOption(context.values, 'interval', { min: 1, default: 500 }) as number;
    const follow = !flag(context.values, 'no-follow');
    if (!follow && from === undefined) throw new UsageError('--no-follow needs --from <position>', { hint: 'Without --from, tail starts at the end of the log.' });
    const types = stringsOption(context.values, 'type');
    const category = context.values.category as string | undefined;
    if (category !== undefined && (category === '' || category.includes('-'))) {
      throw new UsageError(`--category takes a category name without '-', got "${category}"`, { hint: "A category is a stream id up to its first '-': --category order follows order-1, order-2, ..." });
    }
    const asJson = flag(context.values, 'json');
    const db = await context.open();
    const after = from === undefined ? await db.store.headPosition() : from - 1;
    if (follow && context.io.stderr.isTTY) context.err(`Following ${db.target.display} after position ${after} (Ctrl-C to stop)\n`);
    await followLog(
      db.store,
      { after, types: types.length === 0 ? undefined : types, category, limit, follow, intervalMs, signal: context.signal },
      (event) => context.out(eventLine(event, asJson)),
    );
    return ExitCode.Ok;
  },
};

export const eventCommands: CommandSpec[] = [read, tail, check];
