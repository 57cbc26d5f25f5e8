import { ErrorCode, isEskitError } from '../../core/errors.js';
import type { CorruptEventError } from '../../core/errors.js';
import type { EventShape, Recorded } from '../../core/event.js';
import { SCHEMA_VERSION_KEY } from '../../core/registry.js';
import type { EventRegistry } from '../../core/registry.js';
import type { EventStore } from '../../core/store.js';
import { envelopeKids, openEnvelopes } from '../../core/personal/fields.js';
import type { Opened } from '../../core/personal/fields.js';
import { personalDataOf } from '../../core/personal/personal-data.js';
import type { CommandSpec } from '../command.js';
import { flag, integerOption, stringOption } from '../command.js';
import { loadConfig } from '../config-loader.js';
import { OPERATIONS_GUIDE } from '../docs.js';
import { CliError, ExitCode, messageOf } from '../errors.js';
import { json, plural, table, truncate } from '../format.js';

/** The stored events of one type at one schema version, and what the registry made of them. */
export interface CheckedType {
  type: string;
  /** The stored `$schemaVersion` (1 without one); the raw value when it is not a positive integer. */
  version: number | string;
  events: number;
  failed: number;
  /** The types they were read as (a renamed type's new name, a split's parts). */
  readAs: string[];
}

export interface CheckFailure {
  position: number;
  streamId: string;
  streamVersion: number;
  type: string;
  version: number | string;
  /** The eskit error code (ESKIT_EVENT_VALIDATION, ESKIT_UNKNOWN_EVENT_TYPE, ...), or null. */
  code: string | null;
  error: string;
}

export interface CheckReport {
  /** Stored events read. */
  checked: number;
  /** Events they decoded into (more than `checked` when splits made several of one). */
  decoded: number;
  /** The position of the last event read (0 for an empty log). */
  through: number;
  failed: number;
  /** True when the check was stopped (Ctrl-C) before the end of the log. */
  interrupted: boolean;
  types: CheckedType[];
  /** The first failures, in log order (as many as --details allows). */
  failures: CheckFailure[];
}

/**
 * Reads the whole log as stored and decodes each event on its own through `registry`, with the very
 * decoding every reader of a store built with it does; an event that fails is counted and the check
 * goes on (a store read would stop at it).
 */
export async function checkLog<E extends EventShape>(
  store: EventStore,
  registry: EventRegistry<E>,
  options: { details: number; signal?: AbortSignal },
): Promise<CheckReport> {
  const report: CheckReport = { checked: 0, decoded: 0, through: 0, failed: 0, interrupted: false, types: [], failures: [] };
  const byKey = new Map<string, CheckedType & { seen: Set<string> }>();
  const personal = personalDataOf(store);
  const fail = (failure: CheckFailure): void => {
    report.failed += 1;
    if (report.failures.length < options.details) report.failures.push(failure);
  };
  for (let after = 0, reading = true; reading; ) {
    reading = false;
    try {
      for await (const event of store.readAll({ raw: true, after })) {
        if (options.signal?.aborted) {
          report.interrupted = true;
          break;
        }
        after = event.position;
        check(event, await opened(event));
      }
    } catch (error) {
      // A row that is not even JSON stops a raw read: count it and read on after it.
      if (!isEskitError(error, ErrorCode.CorruptEvent)) throw error;
      const { position } = error as CorruptEventError;
      report.checked += 1;
      report.through = after = position;
      fail({ position, streamId: '?', streamVersion: 0, type: '?', version: '?', code: error.code, error: error.message });
      reading = true;
    }
  }
  /** The event's personal fields opened as every reader opens them (or undefined: it has none). */
  async function opened(event: Recorded): Promise<Opened | Error | undefined> {
    if (personal === undefined) return undefined;
    const kids = envelopeKids(event.data, new Set());
    if (kids.size === 0) return undefined;
    const keys = await personal.keysById([...kids]);
    try {
      return openEnvelopes(event.data, keys, event.id, event.position);
    } catch (error) {
      // A key the store never had, a field that does not decrypt: this event fails, the check goes on.
      return error instanceof Error ? error : new Error(String(error));
    }
  }
  function check(event: Recorded, open: Opened | Error | undefined): void {
    const version = versionOf(event);
    const key = `${event.type}\u0000${String(version)}`;
    let entry = byKey.get(key);
    if (entry === undefined) {
      entry = { type: event.type, version, events: 0, failed: 0, readAs: [], seen: new Set() };
      byKey.set(key, entry);
    }
    entry.events += 1;
    report.checked += 1;
    report.through = event.position;
    try {
      if (open instanceof Error) throw open;
      if (open !== undefined) event.data = open.data;
      for (const decoded of registry.decodeEvent(event, { redacted: open?.redacted === true })) {
        entry.seen.add(decoded.type);
        report.decoded += 1;
      }
    } catch (error) {
      entry.failed += 1;
      const { position, streamId, streamVersion, type } = event;
      // A reason given about opened personal data may quote it: the report goes to a terminal or a CI log.
      const reason = open !== undefined && !(open instanceof Error) && open.kids.length > 0 ? 'the reason is withheld: the event holds personal data, which it may quote' : messageOf(error);
      fail({ position, streamId, streamVersion, type, version, code: isEskitError(error) ? error.code : null, error: reason });
    }
  }
  report.types = [...byKey.values()]
    .map(({ seen, ...entry }) => ({ ...entry, readAs: [...seen] }))
    .sort((a, b) => a.type.localeCompare(b.type) || String(a.version).localeCompare(String(b.version), undefined, { numeric: true }));
  return report;
}

function versionOf(event: Recorded): number | string {
  const value = event.metadata[SCHEMA_VERSION_KEY];
  if (value === undefined) return 1;
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 1 ? value : JSON.stringify(value);
}

function text(report: CheckReport, source: string): string {
  const rows = report.types.map((t) => [t.type, String(t.version), String(t.events), String(t.failed), t.readAs.join(', ')]);
  let out = `Checked ${plural(report.checked, 'stored event')} (through position ${report.through}) with the registry of ${source}: ` +
    `${plural(report.decoded, 'event')} read.\n\n`;
  if (rows.length > 0) out += `${table(['TYPE', 'VERSION', 'EVENTS', 'FAILED', 'READ AS'], rows)}\n`;
  if (report.interrupted) out += 'Interrupted before the end of the log: the counts above are partial.\n';
  if (report.failed === 0) return `${out}${report.interrupted ? '' : 'Every event decodes.\n'}`;
  out += `${plural(report.failed, 'event')} no longer decode${report.failed === 1 ? 's' : ''}:\n`;
  for (const f of report.failures) {
    out += `  position ${f.position}  ${f.streamId}@${f.streamVersion}  ${f.type} v${f.version}  ${truncate(f.error, 300)}\n`;
  }
  const hidden = report.failed - report.failures.length;
  if (hidden > 0) out += `  ... and ${hidden} more (--details <n> lists more, --json gives them to a script).\n`;
  return out;
}

export const check: CommandSpec = {
  name: 'events check',
  summary: 'decode the whole log through the config\'s registry (before a deploy)',
  help: `Usage: eskit events check [--config <file>] [--details <n>] [--json]

Reads every stored event (the whole log, as stored) and decodes each one through the registry of the
config module, exactly as the application's readers would: renames, upcasters, splits, validate.
Prints the stored events per type and schema version (the metadata's $schemaVersion, 1 without it),
what they are read as, and every event that no longer decodes: position, stream, type, error.
Exit 1 when any event fails, so that a deploy can be checked against the data before it ships:
point --config at the new code's config and --db at (a copy of) production.

The registry comes from the config module: --config, or the first of eskit.config.js,
eskit.config.mjs, eskit.config.ts, eskit.config.mts in the working directory; its default export
has { registry } (see ${OPERATIONS_GUIDE}).

Options:
  --config <file>   the config module
  --details <n>     list at most n failing events (default 20)
  --json            print the report as JSON {checked, decoded, through, failed, interrupted,
                    types: [{type, version, events, failed, readAs}], failures: [...]}
`,
  options: { config: { type: 'string' }, details: { type: 'string' }, json: { type: 'boolean' } },
  positionals: { min: 0, max: 0, names: '' },
  async run(context) {
    const details = integerOption(context.values, 'details', { min: 0, default: 20 }) as number;
    const { path, config } = await loadConfig(stringOption(context.values, 'config'), context.cwd);
    if (config.registry === undefined) {
      throw new CliError(`the config ${path} defines no registry`, { hint: `Add registry: <your EventRegistry> to its default export (see ${OPERATIONS_GUIDE}).` });
    }
    // Opened without the registry: the check reads raw and decodes each event itself.
    const db = await context.open();
    let report: CheckReport;
    try {
      report = await checkLog(db.store, config.registry, { details, signal: context.signal });
    } catch (error) {
      throw new CliError(`reading the log failed: ${messageOf(error)}`, { cause: error });
    }
    context.out(flag(context.values, 'json') ? json(report) : text(report, path));
    return report.failed > 0 || report.interrupted ? ExitCode.Failed : ExitCode.Ok;
  },
};
