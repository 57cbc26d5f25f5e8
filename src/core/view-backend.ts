// The contract between the SQL view engine (src/view) and the adapters that keep views in their
// database: an adapter offers `SqlViews` (on its one-call backend, as `views`), and the engine asks it
// for one `SqlViewBackend` per view. The helpers here are the rules every adapter must apply alike.
import { createHash } from 'node:crypto';
import type { CheckpointInfo } from './checkpoint.js';
import { InvalidArgumentError } from './errors.js';
import type { EventShape, Recorded } from './event.js';
import type { Upsert } from './view-rows.js';

/** A SQL view's tables and indexes, versioned. */
export interface SqlViewSetup {
  /**
   * A positive integer. Raise it whenever the statements or `evolve` change what the tables hold:
   * `rebuildIfChanged()` then rebuilds the view, and `start()` refuses to run on tables of another version.
   */
  version: number;
  /**
   * The CREATE TABLE / CREATE INDEX statements. Every table AND index name must come from `table()`
   * (lower-case identifiers of at most 40 characters), because a rebuild creates the same objects
   * under shadow names first. Called more than once: it must only build strings. (PostgreSQL: here
   * `table()` gives unqualified names, and the statements run with the view's schema first on the
   * search path, since an index name cannot be schema-qualified; in `evolve` it gives qualified ones.)
   */
  statements: (table: (name: string) => string) => readonly string[];
}

/**
 * What `evolve` writes with on every adapter; each adds its own connection (`db` on SQLite, `client`
 * on PostgreSQL). An `evolve` that uses only these runs on either.
 */
export interface SqlViewTx {
  /** The table (or index) `name` as SQL text: the live table, or its shadow copy during a rebuild. */
  table(name: string): string;
  /** Inserts or updates one row of the view table `name` (the name given to `table()`). */
  readonly upsert: Upsert;
}

/**
 * What a view is made of, as the engine hands it to `SqlViews.create`, checked by `checkSqlViewSpec`:
 * exactly one of `evolve` and `evolveBatch` is set. `Tx` is what the adapter's `evolve` writes with,
 * `R` what it may return (a synchronous driver takes `void` only).
 */
export interface SqlViewSpec<E extends EventShape, Tx, R> {
  readonly name: string;
  /** Only events of these types reach evolve; undefined: every type. */
  readonly types: readonly E['type'][] | undefined;
  /** Only events of streams in this category; undefined: every stream. */
  readonly category?: string | undefined;
  readonly setup: SqlViewSetup;
  /** Applies one event, inside the transaction that also saves the checkpoint. */
  readonly evolve?: (event: Recorded<E>, tx: Tx) => R;
  /**
   * Applies a batch (in log order) in that transaction instead. The engine retries a failing batch one
   * event at a time, so it must also work for a single event.
   */
  readonly evolveBatch?: (events: readonly Recorded<E>[], tx: Tx) => R;
}

/**
 * The SQL views an adapter keeps in its database, next to the events: `sqlite()` and `postgres()`
 * offer it as `backend.views`, and `new SqlView({ backend, ... })` calls `create` once.
 */
export interface SqlViews<E extends EventShape, Tx, R> {
  create(spec: SqlViewSpec<E, Tx, R>): SqlViewBackend<E>;
}

/** What the view versions table says about a view. */
export interface ViewMeta {
  version: number;
  /** Incremented by every swap; the live runner's writes check it. */
  generation: number;
  /** The names (unquoted, unsuffixed) of the live tables. */
  tables: readonly string[];
}

/** A commit of a view made by another process (or another SqlView object), as its backend announced it. */
export interface ViewCommitHint {
  /** The lane whose checkpoint moved: the view's own name, or a partition's `<name>#<p>/<N>`. */
  readonly lane: string;
  /** The position of the first event the commit applied; `to + 1` when it applied none. */
  readonly from: number;
  /** The lane's checkpoint after the commit. */
  readonly to: number;
  /** A rebuild was swapped in at `to` (every lane's checkpoint is there now): anything may have changed. */
  readonly swapped: boolean;
}

/** Who hears a view's commits from elsewhere (see `SqlViewBackend.watch`). */
export interface ViewCommitListener {
  committed(hint: ViewCommitHint): void;
  /** Hints may have been lost (the adapter's connection was down): called each time it hears again. */
  missed(): void;
}

/** Where a rebuild starts: the shadow tables' generation, and the position their rows reflect (0: empty). */
export interface RebuildStart {
  generation: number;
  resumeFrom: number;
}

/**
 * One view's tables, checkpoints and rebuilds in the adapter's database. Every method that writes runs
 * in one transaction of its own; `applyLive` and `saveCheckpoint` check the generation (and
 * `applyShadow` and `swap` the rebuild id) inside that transaction, and throw `ViewFencedError` when
 * it changed.
 *
 * A view has one checkpoint per lane: its own name unpartitioned, `<name>#<p>/<N>` for each partition
 * (see `isViewCheckpoint`). Every lane writes the same tables; each commits its own checkpoint with
 * its writes, fenced by its own lease's token.
 */
export interface SqlViewBackend<E extends EventShape> {
  /** The live table `name`, ready for SQL text. */
  table(name: string): string;
  /** Creates the versions table and, for a view never set up, its tables (at `version`). */
  ensureSetup(version: number): Promise<ViewMeta>;
  readMeta(): Promise<ViewMeta | undefined>;
  loadCheckpoint(checkpoint: string): Promise<number | undefined>;
  claimCheckpoint(checkpoint: string, fencingToken: number): Promise<number | undefined>;
  /** The view's saved checkpoints, of every lane and partition count (`isViewCheckpoint`), by name. */
  listCheckpoints(): Promise<CheckpointInfo[]>;
  /** evolve for each event, then the lane's checkpoint (fenced by the token), in one transaction. */
  applyLive(events: readonly Recorded<E>[], generation: number, fencingToken: number | undefined, checkpoint: string): Promise<void>;
  saveCheckpoint(checkpoint: string, position: number, generation: number, fencingToken: number | undefined): Promise<void>;
  /** The position of the last event of the view's types in (after, upTo]; 0 when there is none. */
  lastRelevant(after: number, upTo: number): Promise<number>;
  /** Events of the view's types in (after, upTo]. */
  countRelevant(after: number, upTo: number): Promise<number>;
  /**
   * Claims the rebuild for `rebuildId` (fencing the rebuild that had it). Shadow tables left by a
   * rebuild whose process died are taken over where their own checkpoint says, when they were built
   * with the same code (`rebuildFingerprint`) and no other rebuilder has touched them since, unless
   * `fresh`; otherwise they are dropped and created anew (`resumeFrom` 0).
   */
  beginRebuild(rebuildId: string, options?: { fresh?: boolean }): Promise<RebuildStart>;
  /** evolve for each event into the shadow tables, and their checkpoint, in one transaction. */
  applyShadow(events: readonly Recorded<E>[], rebuildId: string, generation: number): Promise<void>;
  /**
   * In one transaction: applies to the shadow tables the events the live view has applied beyond
   * `position` (the live view is kept from moving meanwhile, or the swap notices that any of its
   * checkpoints did), swaps the shadow tables in, and sets every checkpoint of the view (each lane's,
   * of any partition count, and `checkpoints`, the rebuilder's own lanes, written last) where the
   * shadow got. Returns that position and the events applied here, or 'behind' (changing nothing) when
   * it has to be tried again after another round of catching up.
   */
  swap(
    rebuildId: string,
    generation: number,
    position: number,
    version: number,
    checkpoints: readonly string[],
  ): Promise<{ position: number; applied: number } | 'behind'>;
  /** Drops the shadow tables (and their checkpoint) if the rebuild is still ours. */
  abandonRebuild(rebuildId: string, generation: number): Promise<void>;
  /**
   * Optional: hears the view's commits made elsewhere (other processes, other SqlView objects of the
   * same view), as they commit, so that `waitFor` and the change feed need not poll for them. Only
   * hints: the engine still polls, more slowly while `hearing`.
   */
  watch?(listener: ViewCommitListener): ViewWatch;
}

/** A `watch` in place. */
export interface ViewWatch {
  stop(): void;
  /** True while hints arrive (the adapter's connection is up): polling can then slow down. */
  readonly hearing: boolean;
}

/**
 * Whether the checkpoint `name` is one of view `view`'s: its own, or a partition's, `<view>#<p>/<N>`
 * (the runner names of src/subscription/partition/naming.ts). Adapters select the rows by the prefix,
 * then keep these, so that a view named `<view>#eu` is not taken for one of them.
 */
export function isViewCheckpoint(view: string, name: string): boolean {
  if (name === view) return true;
  if (!name.startsWith(`${view}#`)) return false;
  const match = /^(\d+)\/(\d+)$/.exec(name.slice(view.length + 1));
  return match !== null && Number(match[1]) < Number(match[2]);
}

// Room for the shadow suffix (`__rebuild_<generation>`) within PostgreSQL's 63-byte identifiers.
const TABLE_NAME = /^[a-z_][a-z0-9_]{0,39}$/;

/** Checks a name given to `table()`; returns it. */
export function checkTableName(view: string, name: unknown): string {
  if (typeof name !== 'string' || !TABLE_NAME.test(name) || name.includes('__rebuild_')) {
    throw new InvalidArgumentError(
      `View "${view}": table(${JSON.stringify(name) ?? String(name)}) needs a lower-case SQL identifier of at most 40 characters ` +
        '(a-z, 0-9, _; not starting with a digit; without "__rebuild_").',
    );
  }
  return name;
}

/**
 * `table()` as evolve gets it: `name` checked (`checkTableName`) and turned into SQL text by `toSql`,
 * once per name. The usual evolve calls it for every event, and the check is a regular expression.
 */
export function tableNames(view: string, toSql: (name: string) => string): (name: string) => string {
  const known = new Map<string, string>();
  return (name) => {
    let sql = known.get(name);
    if (sql === undefined) {
      sql = toSql(checkTableName(view, name));
      if (known.size >= 1000) known.clear();
      known.set(name, sql);
    }
    return sql;
  };
}

/**
 * The shadow name of `name` for the rebuild that produces `generation`. The suffix carries the
 * generation so that index names (which live on after the table is renamed) never collide with the
 * next rebuild's.
 */
export function shadowName(name: string, generation: number): string {
  return `${name}__rebuild_${generation}`;
}

/**
 * What a rebuild's shadow tables are built with, as a hash: the setup (version and statements), the
 * view's types, and the source text of evolve / evolveBatch. A rebuild resumes only shadow tables of
 * the same fingerprint, so that no view holds rows written by two versions of its code. What the
 * source text does not show (a helper it calls, a value it closes over) is not in it: that is what
 * the rebuild's `fresh` option is for.
 */
export function rebuildFingerprint(spec: {
  readonly types: readonly string[] | undefined;
  readonly category?: string | undefined;
  readonly setup: SqlViewSetup;
  readonly evolve?: unknown;
  readonly evolveBatch?: unknown;
}): string {
  const code = {
    version: spec.setup.version,
    statements: spec.setup.statements((name) => `{${name}}`),
    types: spec.types && [...new Set(spec.types)].sort(),
    // Absent (so the same hash as before categories existed) when the view reads every stream.
    category: spec.category,
    evolve: spec.evolve === undefined ? null : String(spec.evolve),
    evolveBatch: spec.evolveBatch === undefined ? null : String(spec.evolveBatch),
  };
  return createHash('sha1').update(JSON.stringify(code)).digest('hex');
}

/**
 * A rebuild swaps its new tables in under their live names, dropping the live tables first: only
 * tables this view owns may be dropped. A new name that is already a table of someone else's (another
 * view, or the application) is refused.
 */
export function assertOwnTables(view: string, newTables: readonly string[], ownTables: readonly string[], isLiveTable: (name: string) => boolean): void {
  const taken = newTables.filter((name) => !ownTables.includes(name) && isLiveTable(name));
  if (taken.length > 0) {
    throw new InvalidArgumentError(
      `View "${view}": its new setup creates table(s) ${taken.map((name) => `"${name}"`).join(', ')}, which already exist and are not this view's ` +
        '(another view or the application owns them). A rebuild would replace them; rename the table(s) in the setup.',
    );
  }
}

/** The names the setup passes to `table()`, in order. */
export function setupNames(view: string, setup: SqlViewSetup): string[] {
  const names = new Set<string>();
  setup.statements((name) => {
    names.add(checkTableName(view, name));
    return name;
  });
  return [...names];
}

/**
 * Checks what every SQL view needs, whatever its database: a name, a versioned setup whose names
 * `table()` accepts, and exactly one of `evolve` and `evolveBatch`.
 */
export function checkSqlViewSpec(kind: string, spec: { name?: unknown; setup?: unknown; evolve?: unknown; evolveBatch?: unknown }): void {
  if (typeof spec.name !== 'string' || spec.name.length === 0) throw new InvalidArgumentError(`${kind} needs a non-empty name.`);
  if (spec.evolve !== undefined && spec.evolveBatch !== undefined) {
    throw new InvalidArgumentError(`${kind} "${spec.name}" takes evolve or evolveBatch, not both.`);
  }
  if (typeof (spec.evolve ?? spec.evolveBatch) !== 'function') {
    throw new InvalidArgumentError(`${kind} "${spec.name}" needs an evolve(event, tx) function (or evolveBatch(events, tx)).`);
  }
  const setup = spec.setup as SqlViewSetup | undefined;
  if (typeof setup !== 'object' || setup === null || typeof setup.statements !== 'function') {
    throw new InvalidArgumentError(`${kind} "${spec.name}" needs setup: { version, statements: (table) => [...] }.`);
  }
  if (!Number.isSafeInteger(setup.version) || setup.version < 1) {
    throw new InvalidArgumentError(`${kind} "${spec.name}": setup.version must be a positive integer, got ${String(setup.version)}`);
  }
  const statements = setup.statements((name) => checkTableName(spec.name as string, name));
  if (!Array.isArray(statements) || statements.some((statement) => typeof statement !== 'string')) {
    throw new InvalidArgumentError(`${kind} "${spec.name}": setup.statements must return an array of SQL strings.`);
  }
}
