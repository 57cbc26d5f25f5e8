// A PostgreSQL view's rebuilds (see SqlViewBackend): the shadow tables built next to the live ones,
// their checkpoint in view_shadows, and the swap that puts them in place. The live view, and the
// helpers both halves use, are in postgres-view.ts.
import type pg from 'pg';
import type { EventShape, Recorded } from '../core/event.js';
import { ViewFencedError } from '../core/errors.js';
import type { EventStore } from '../core/store.js';
import { assertOwnTables, checkTableName, isViewCheckpoint, setupNames, shadowName } from '../core/view-backend.js';
import type { RebuildStart, SqlViewSetup, ViewMeta } from '../core/view-backend.js';
import { savePostgresCheckpoint, VIEW_CHECKPOINTS } from './postgres-checkpoint-store.js';
import { quoteSchema } from './schema.js';
import type { ViewHints } from './view-hints.js';
import { postgresViewTx } from './view-tx.js';
import type { ViewTx } from './view-tx.js';

/** What a view's rebuilds take from its backend (PostgresViewBackend): the view, and its helpers. */
export interface ViewRebuildHost<E extends EventShape> {
  readonly store: EventStore<E>;
  readonly schema: string;
  readonly view: string;
  readonly setup: SqlViewSetup;
  readonly types: string[] | undefined;
  readonly category: string | undefined;
  /** What the shadow tables of this object's rebuilds are built with (see beginRebuild). */
  readonly fingerprint: string;
  /** The swap announces itself on the view's hint channel. */
  readonly hints: ViewHints;
  evolve(events: readonly Recorded<E>[], tx: ViewTx): Promise<void>;
  /** One transaction on a connection of the pool (not a live one: no generation check). */
  transaction<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T>;
  meta(client: pg.ClientBase, lock: ' FOR UPDATE' | ' FOR SHARE'): Promise<(ViewMeta & { rebuildId: string | null }) | undefined>;
  /** Runs the setup with `map` naming the objects; returns the (unmapped) names that became tables. */
  create(client: pg.PoolClient, map: (name: string) => string): Promise<string[]>;
  /** Which of `names` are tables in the schema (read from the catalog, under the caller's locks). */
  tables(client: pg.PoolClient, names: readonly string[]): Promise<Set<string>>;
  qualified(name: string): string;
}

/** How long a swap waits for readers to let go of the live tables before it tries again. */
const SWAP_LOCK_TIMEOUT_MS = 200;

/** evolve failed on an event applied during the swap. */
class TailFailed extends Error {
  constructor(readonly error: unknown) {
    super('evolve failed on an event applied during the swap', { cause: error });
  }
}

/** The rebuilds of one view into shadow tables: PostgresViewBackend's beginRebuild, applyShadow, swap and abandonRebuild. */
export class PostgresViewRebuilds<E extends EventShape> {
  readonly #host: ViewRebuildHost<E>;
  readonly #name: string;
  readonly #s: string;

  constructor(host: ViewRebuildHost<E>) {
    this.#host = host;
    this.#name = host.view;
    this.#s = quoteSchema(host.schema);
  }

  async beginRebuild(rebuildId: string, options: { fresh?: boolean } = {}): Promise<RebuildStart> {
    const host = this.#host;
    return host.transaction(async (client) => {
      const meta = await host.meta(client, ' FOR UPDATE');
      if (!meta) throw new ViewFencedError(this.#name, 'superseded');
      const generation = meta.generation + 1;
      // Read in a statement of its own, after the lock: a shadow batch of the rebuild taken over
      // (FOR SHARE) has committed by now, and this statement's snapshot sees its checkpoint.
      const resumeFrom = options.fresh === true ? undefined : await this.#resumable(client, meta.rebuildId, generation);
      await client.query(`UPDATE ${this.#s}.view_versions SET rebuild_id = $2 WHERE name = $1`, [this.#name, rebuildId]);
      if (resumeFrom !== undefined) {
        await client.query(`UPDATE ${this.#s}.view_shadows SET rebuild_id = $2, updated_at = clock_timestamp() WHERE name = $1`, [this.#name, rebuildId]);
        return { generation, resumeFrom };
      }
      await this.#dropShadow(client, generation);
      const tables = await host.create(client, (name) => shadowName(name, generation));
      const live = await host.tables(client, tables);
      assertOwnTables(this.#name, tables, meta.tables, (name) => live.has(name));
      await client.query(
        `INSERT INTO ${this.#s}.view_shadows (name, rebuild_id, generation, tables, fingerprint, position, updated_at) VALUES ($1, $2, $3, $4, $5, 0, clock_timestamp())
         ON CONFLICT (name) DO UPDATE SET rebuild_id = excluded.rebuild_id, generation = excluded.generation, tables = excluded.tables,
           fingerprint = excluded.fingerprint, position = 0, updated_at = excluded.updated_at`,
        [this.#name, rebuildId, generation, tables, host.fingerprint],
      );
      return { generation, resumeFrom: 0 };
    });
  }

  async applyShadow(events: readonly Recorded<E>[], rebuildId: string, generation: number): Promise<void> {
    await this.#host.transaction(async (client) => {
      await this.#checkRebuild(client, rebuildId, ' FOR SHARE');
      const shadow = this.#shadowTx(client, generation);
      await this.#host.evolve(events, shadow);
      const position = events[events.length - 1]?.position;
      if (position === undefined) return;
      await client.query(`UPDATE ${this.#s}.view_shadows SET position = $3, updated_at = clock_timestamp() WHERE name = $1 AND rebuild_id = $2`, [
        this.#name,
        rebuildId,
        position,
      ]);
    });
  }

  async swap(
    rebuildId: string,
    generation: number,
    position: number,
    version: number,
    checkpoints: readonly string[],
  ): Promise<{ position: number; applied: number } | 'behind'> {
    const host = this.#host;
    // The live view may be ahead of the shadow by what was appended during the last round. Those events
    // are read first, holding no connection (reading them inside the transaction would need a second
    // connection while live transactions wait on this one: a small pool could run dry), and applied
    // inside the swap's transaction. If the live view got further still in between, 'behind'.
    const head = await host.store.headPosition();
    const tail: Recorded<E>[] = [];
    for await (const event of host.store.readAll({ after: position, types: host.types, category: host.category })) tail.push(event);
    const upTo = Math.max(position, head, tail[tail.length - 1]?.position ?? 0);
    try {
      return await host.transaction(async (client) => {
        // FOR UPDATE first: live transactions (FOR SHARE) in flight finish before, later ones wait
        // until after, so the live checkpoints read next stay where they are until the swap commits.
        const meta = await this.#checkRebuild(client, rebuildId, ' FOR UPDATE');
        const live = await client.query<[string, string | null]>({
          rowMode: 'array',
          text: `SELECT name, position FROM ${this.#s}.checkpoints WHERE ${VIEW_CHECKPOINTS}`,
          values: [this.#name],
        });
        const lanes = live.rows.filter(([name]) => isViewCheckpoint(this.#name, name));
        // Any lane further than the shadow (a partition passes the others' events too): another round.
        if (lanes.some(([, at]) => Number(at ?? 0) > upTo)) return 'behind';
        const shadow = this.#shadowTx(client, generation);
        try {
          if (tail.length > 0) await host.evolve(tail, shadow);
        } catch (error) {
          throw new TailFailed(error);
        }
        const names = setupNames(this.#name, host.setup);
        const shadowTables = await host.tables(client, names.map((name) => shadowName(name, generation)));
        const tables = names.filter((name) => shadowTables.has(shadowName(name, generation)));
        const existing = await host.tables(client, [...new Set([...meta.tables, ...tables])]);
        assertOwnTables(this.#name, tables, meta.tables, (name) => existing.has(name));
        const liveTables = [...existing];
        if (liveTables.length > 0) {
          // Readers of two view tables can hold one while waiting for the other; a swap waiting for
          // the first while holding the second would deadlock with them. So the swap takes every live
          // table at once, and gives up (to try again) well before deadlock detection would pick a
          // victim, which could be a reader.
          await client.query(`SET LOCAL lock_timeout = '${SWAP_LOCK_TIMEOUT_MS}ms'`);
          await client.query(`LOCK TABLE ${liveTables.map((name) => host.qualified(name)).join(', ')} IN ACCESS EXCLUSIVE MODE`);
        }
        for (const name of liveTables) await client.query(`DROP TABLE ${host.qualified(name)}`);
        for (const name of tables) await client.query(`ALTER TABLE ${host.qualified(shadowName(name, generation))} RENAME TO "${name}"`);
        await client.query(
          `UPDATE ${this.#s}.view_versions SET version = $2, generation = $3, tables = $4, rebuild_id = NULL, updated_at = clock_timestamp() WHERE name = $1`,
          [this.#name, version, generation, tables],
        );
        await client.query(`DELETE FROM ${this.#s}.view_shadows WHERE name = $1`, [this.#name]);
        // Every lane of every partition count the view has run with goes to the swap position, the
        // rebuilder's own ones last (the latest saved: the layout in use), so that whichever count
        // starts next begins there. No token: the swap is not the leader. The leaders' next writes
        // fail the generation check, and they reload these.
        const own = new Set(checkpoints);
        for (const name of [...lanes.map(([name]) => name).filter((name) => !own.has(name)), ...own]) {
          await savePostgresCheckpoint(client, name, upTo, { schema: host.schema });
        }
        // Processes following the view hear that everything may have changed, when (if) this commits.
        // A hint too long for a NOTIFY (a view name of thousands of bytes) is not sent: readers poll.
        const hint = host.hints.payload(this.#name, upTo + 1, upTo, true);
        if (hint !== undefined) await client.query('SELECT pg_notify($1, $2)', [host.hints.channel, hint]);
        return { position: upTo, applied: tail.length };
      });
    } catch (error) {
      // Rolled back with the rest; the next round applies these events with the view's failure handling.
      if (error instanceof TailFailed) return 'behind';
      // lock_not_available, deadlock_detected: readers held the live tables; try again after a round.
      const code = (error as { code?: unknown }).code;
      if (code === '55P03' || code === '40P01') return 'behind';
      throw error;
    }
  }

  async abandonRebuild(rebuildId: string, generation: number): Promise<void> {
    await this.#host.transaction(async (client) => {
      const meta = await this.#host.meta(client, ' FOR UPDATE');
      if (meta?.rebuildId !== rebuildId) return;
      await this.#dropShadow(client, generation);
      await client.query(`UPDATE ${this.#s}.view_versions SET rebuild_id = NULL WHERE name = $1`, [this.#name]);
      await client.query(`DELETE FROM ${this.#s}.view_shadows WHERE name = $1`, [this.#name]);
    });
  }

  /**
   * Creates the table of the shadow tables' checkpoints (also in a schema whose views were set up
   * before rebuilds kept one), under ensureSetup's lock. One row per view while it has shadow tables:
   * the rebuild that created or took them over last (equal to view_versions.rebuild_id unless a
   * rebuilder that keeps no such row took them since), their generation and tables, what built them
   * (rebuildFingerprint), and their checkpoint, committed with each shadow batch. Not columns of
   * view_versions: every live transaction reads that row FOR SHARE, and a shadow batch updating it
   * would wait for them, and they for its commit.
   */
  async ensureShadows(client: pg.PoolClient): Promise<void> {
    if ((await this.#host.tables(client, ['view_shadows'])).size !== 0) return;
    await client.query(`
      CREATE TABLE ${this.#s}.view_shadows (
        name text PRIMARY KEY,
        rebuild_id text NOT NULL,
        generation bigint NOT NULL,
        tables text[] NOT NULL,
        fingerprint text NOT NULL,
        position bigint NOT NULL,
        updated_at timestamptz NOT NULL
      )`);
  }

  /**
   * The checkpoint of shadow tables of `generation` that a rebuild of this code can go on with: the
   * rebuild that last owned them kept it (`owner`, not one that keeps none), they were built with
   * this code, and they are all there. undefined: start over.
   */
  async #resumable(client: pg.PoolClient, owner: string | null, generation: number): Promise<number | undefined> {
    const result = await client.query<{ rebuild_id: string; generation: string; tables: string[]; fingerprint: string; position: string }>(
      `SELECT rebuild_id, generation, tables, fingerprint, position FROM ${this.#s}.view_shadows WHERE name = $1`,
      [this.#name],
    );
    const row = result.rows[0];
    if (!row || row.rebuild_id !== owner || Number(row.generation) !== generation || row.fingerprint !== this.#host.fingerprint) return undefined;
    const shadows = row.tables.map((name) => shadowName(name, generation));
    const present = await this.#host.tables(client, shadows);
    return shadows.every((name) => present.has(name)) ? Number(row.position) : undefined;
  }

  #shadowTx(client: pg.PoolClient, generation: number): ViewTx {
    return postgresViewTx(client, this.#name, (name) => this.#host.qualified(shadowName(checkTableName(this.#name, name), generation)));
  }

  async #checkRebuild(client: pg.PoolClient, rebuildId: string, lock: ' FOR UPDATE' | ' FOR SHARE'): Promise<ViewMeta> {
    const meta = await this.#host.meta(client, lock);
    if (!meta || meta.rebuildId !== rebuildId) throw new ViewFencedError(this.#name, 'superseded');
    return meta;
  }

  async #dropShadow(client: pg.PoolClient, generation: number): Promise<void> {
    const shadows = await this.#host.tables(client, setupNames(this.#name, this.#host.setup).map((name) => shadowName(name, generation)));
    for (const shadow of shadows) await client.query(`DROP TABLE ${this.#host.qualified(shadow)}`);
  }
}
