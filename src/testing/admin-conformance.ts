import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Admin, ResetRefusal, ResetRefusedError } from '../core/admin.js';
import type { Backend } from '../core/backend.js';
import type { NewDeadLetter } from '../core/dead-letter.js';
import { ErrorCode, isEskitError } from '../core/errors.js';
import type { RunnerStatusUpdate } from '../core/runner-status.js';
import { assertFenced } from './fences.js';
import { waitUntil } from './wait.js';

/** A backend under test with its admin surface, on fresh, migrated storage, with leader election on. */
export interface AdminBackend {
  backend: Backend;
  admin: Admin;
  /** Releases what `create` opened (connections, files, schemas). */
  close(): Promise<void>;
}

/** What an adapter hands `adminConformance`. */
export interface AdminConformanceHarness {
  /** Shown in test names, e.g. 'memory', 'sqlite', 'postgres'. */
  name: string;
  /** A fresh backend (leader election on, `backend.locks` defined) for one test; closed when it ends. */
  create(): Promise<AdminBackend>;
  /**
   * Makes `name` a view the admin lists in views() (a SQL view that ran once). Leave it out where
   * views keep no versions table: the view tests are then not registered.
   */
  createView?(backend: AdminBackend, name: string): Promise<void>;
  /**
   * Leaves what a rebuild of the view `name` (made by createView) whose process died after its first
   * shadow batch leaves: its shadow tables and their checkpoint, which it returns. Leave it out where
   * rebuilds keep no such checkpoint.
   */
  deadRebuild?(backend: AdminBackend, name: string): Promise<number>;
  /**
   * The backend stamps times with the database's clock, not this process's: true for a database
   * server or file, false for memory (where this process is the database).
   */
  databaseClock: boolean;
  /** Fails a test that runs longer than this. Default 60 000. */
  testTimeoutMs?: number;
}

async function refused(fn: () => Promise<unknown>, reason: ResetRefusal): Promise<ResetRefusedError> {
  let caught: unknown;
  await assert.rejects(fn, (error: unknown) => {
    caught = error;
    assert.ok(isEskitError(error, ErrorCode.ResetRefused), `expected ESKIT_RESET_REFUSED, got ${String(error)}`);
    assert.equal((error as ResetRefusedError).reason, reason);
    return true;
  });
  return caught as ResetRefusedError;
}

async function invalid(fn: () => Promise<unknown>, what: string): Promise<void> {
  await assert.rejects(fn, (error: unknown) => {
    assert.ok(isEskitError(error, ErrorCode.InvalidArgument), `${what}: expected ESKIT_INVALID_ARGUMENT, got ${String(error)}`);
    return true;
  });
}

function status(overrides: Partial<RunnerStatusUpdate> = {}): RunnerStatusUpdate {
  return {
    name: 'mailer',
    kind: 'automation',
    nodeId: 'node-a',
    state: 'running',
    role: 'leader',
    fencingToken: 3,
    position: 10,
    handled: 42,
    lastEvent: { position: 12, ageMs: 1500 },
    work: { pending: 4, running: 2, hung: 1, retrying: 1, unrecorded: 3, oldestPendingMs: 2500 },
    lastError: 'smtp server down',
    heartbeatMs: 60_000,
    ...overrides,
  };
}

async function letters(backend: Backend): Promise<void> {
  const { events: [first] } = await backend.store.append('order-1', [{ type: 'OrderPlaced', data: {} }]);
  const letter = (source: string, stage: NewDeadLetter['stage']): NewDeadLetter => ({
    source,
    stage,
    key: stage === 'execute' ? 'k' : '',
    payload: null,
    eventId: first?.id ?? '',
    eventType: 'OrderPlaced',
    eventPosition: first?.position ?? 1,
    streamId: 'order-1',
    attempts: [{ at: new Date(), error: 'boom' }],
  });
  const marked = await backend.deadLetters.add(letter('mailer', 'execute'));
  await backend.deadLetters.add(letter('mailer', 'execute'));
  await backend.deadLetters.add(letter('mailer', 'trigger'));
  await backend.deadLetters.add(letter('audit', 'handler'));
  await backend.deadLetters.redrive({ id: marked.id });
}

/**
 * Registers the admin surface's conformance tests (node:test) for one adapter: the schema version,
 * checkpoints with their locks and lag, dead-letter counts, completion sources, the fenced reset and
 * its refusals, and the runners' status rows (by the database's clock, stale when silent).
 *
 * ```ts
 * adminConformance({
 *   name: 'my-adapter',
 *   databaseClock: true,
 *   create: async () => {
 *     const backend = myBackend({ leaderElection: true });
 *     return { backend, admin: backend.admin, close: () => backend.close() };
 *   },
 * });
 * ```
 */
export function adminConformance(harness: AdminConformanceHarness): void {
  const test = (name: string, fn: (subject: AdminBackend) => Promise<void>): void => {
    it(name, { timeout: harness.testTimeoutMs ?? 60_000 }, async () => {
      const subject = await harness.create();
      try {
        assert.ok(subject.backend.locks, 'the harness must turn leader election on');
        await fn(subject);
      } finally {
        await subject.close();
      }
    });
  };

  describe(`Admin conformance: ${harness.name}`, () => {
    test('schema: migrated to the latest version; migrate again applies nothing', async ({ admin }) => {
      await admin.migrate();
      const schema = await admin.schema();
      assert.equal(schema.version, schema.latest);
      assert.equal(schema.exists, true);
      assert.deepEqual(await admin.migrate(), { applied: [], version: schema.latest });
    });

    test('subscriptions: each checkpoint with its lag behind the head, its token and its lock', async ({ backend, admin }) => {
      const locks = backend.locks;
      assert.ok(locks);
      await backend.store.append('s', [{ type: 'A', data: {} }, { type: 'A', data: {} }, { type: 'A', data: {} }, { type: 'A', data: {} }, { type: 'A', data: {} }]);
      await backend.checkpoints.save('plain', 3);
      const lease = await locks.acquire('led');
      await backend.checkpoints.claim('led', lease.fencingToken);
      await backend.checkpoints.save('led', 5, { fencingToken: lease.fencingToken });

      const rows = await admin.subscriptions();
      assert.deepEqual(rows.map((row) => row.name), ['led', 'plain']);
      const [led, plain] = rows;
      assert.deepEqual([plain?.position, plain?.lag, plain?.head, plain?.checkpointToken, plain?.lock], [3, 2, 5, 0, undefined]);
      assert.deepEqual([led?.position, led?.lag, led?.checkpointToken, led?.lock?.held], [5, 0, lease.fencingToken, true]);
      assert.ok(led?.updatedAt instanceof Date);
      const checkpoints = await admin.checkpoints();
      assert.deepEqual(checkpoints.map(({ name, position, fencingToken }) => ({ name, position, fencingToken })), [
        { name: 'led', position: 5, fencingToken: lease.fencingToken },
        { name: 'plain', position: 3, fencingToken: 0 },
      ]);

      await lease.release();
      const free = (await admin.locks()).find((lock) => lock.name === 'led');
      assert.equal(free?.held, false, 'a lock that was used and is free now is listed as not held');
      assert.equal(free?.holder, undefined);
    });

    test('dead letters counted by source, stage and status; completion sources', async ({ backend, admin }) => {
      await letters(backend);
      assert.deepEqual(await admin.deadLetterCounts(), [
        { source: 'audit', stage: 'handler', status: 'dead', count: 1 },
        { source: 'mailer', stage: 'execute', status: 'dead', count: 1 },
        { source: 'mailer', stage: 'execute', status: 'redrive', count: 1 },
        { source: 'mailer', stage: 'trigger', status: 'dead', count: 1 },
      ]);
      await backend.checkpoints.save('shipper', 1);
      await backend.completions.markCompleted('shipper', [{ position: 1, itemId: 'x' }]);
      assert.deepEqual(await admin.completionSources(), ['shipper']);
    });

    test('reset without leader election: moved, and says nothing was fenced', async ({ backend, admin }) => {
      await backend.checkpoints.save('plain', 7);
      const outcome = await admin.resetCheckpoint('plain', 2);
      assert.deepEqual(outcome, { name: 'plain', previous: 7, position: 2, fencingToken: undefined, heldBy: undefined, fencing: 'none' });
      assert.equal(await backend.checkpoints.load('plain'), 2);
    });

    test('reset of a checkpoint a leader claimed and holds: refused, then forced and fenced; the next leader goes on from it', async ({ backend, admin }) => {
      const locks = backend.locks;
      assert.ok(locks);
      const lease = await locks.acquire('led');
      await backend.checkpoints.claim('led', lease.fencingToken);
      await backend.checkpoints.save('led', 5, { fencingToken: lease.fencingToken });

      const error = await refused(() => admin.resetCheckpoint('led', 0), 'held');
      assert.equal(error.heldBy?.held, true);
      assert.match(error.message, /"led" is being processed/);
      assert.equal(await backend.checkpoints.load('led'), 5, 'a refused reset changes nothing');

      const outcome = await admin.resetCheckpoint('led', 0, { force: true });
      assert.deepEqual([outcome.previous, outcome.position, outcome.heldBy?.held], [5, 0, true]);
      assert.notEqual(outcome.fencing, 'none');
      assert.ok((outcome.fencingToken ?? 0) > lease.fencingToken, 'the checkpoint took a token above the leader\'s');
      await assertFenced(() => backend.checkpoints.save('led', 6, { fencingToken: lease.fencingToken }), 'led', lease.fencingToken, outcome.fencingToken as number);
      assert.equal(await backend.checkpoints.load('led'), 0, 'the old leader cannot write its position over the reset');

      await lease.release();
      const next = await locks.acquire('led', { signal: AbortSignal.timeout(10_000) });
      assert.equal(await backend.checkpoints.claim('led', next.fencingToken), 0, 'the next leader claims it and starts from the reset position');
      await next.release();
    });

    test('reset of a checkpoint claimed but never saved; unknown names and bad arguments are refused', async ({ backend, admin }) => {
      const locks = backend.locks;
      assert.ok(locks);
      const lease = await locks.acquire('claimed');
      await backend.checkpoints.claim('claimed', lease.fencingToken);
      await lease.release();
      const outcome = await admin.resetCheckpoint('claimed', 4);
      assert.deepEqual([outcome.previous, outcome.position, outcome.heldBy], [undefined, 4, undefined]);
      assert.equal(await backend.checkpoints.load('claimed'), 4);

      const unknown = await refused(() => admin.resetCheckpoint('nope', 0), 'unknown');
      assert.deepEqual(unknown.known, ['claimed']);
      assert.match(unknown.message, /No subscription or automation "nope".*known: "claimed"/);
      await invalid(() => admin.resetCheckpoint('claimed', -1), 'a negative position');
      await invalid(() => admin.resetCheckpoint('claimed', 1.5), 'a fractional position');
      await invalid(() => admin.resetCheckpoint('', 0), 'an empty name');
    });

    if (harness.createView) {
      const createView = harness.createView;
      test('views are listed with their versions, and their checkpoint is refused to reset', async (subject) => {
        await createView(subject, 'carts');
        const [view, ...rest] = await subject.admin.views();
        assert.deepEqual(rest, []);
        assert.deepEqual([view?.name, view?.generation, view?.rebuilding, view?.shadow], ['carts', 0, false, undefined]);
        assert.ok(view?.updatedAt instanceof Date);
        const error = await refused(() => subject.admin.resetCheckpoint('carts', 0), 'view');
        assert.match(error.message, /Rebuild the view instead/);
      });

      test("a view's live tables are listed with their row counts; a name without a view has none", async (subject) => {
        await createView(subject, 'carts');
        await subject.backend.store.append('cart-2', [{ type: 'CartOpened', data: {} }]);
        assert.deepEqual(await subject.admin.viewTables('carts'), [{ table: 'carts', rows: 1, capped: false }], 'the row the view wrote for cart-1 (cart-2 came after it stopped)');
        assert.deepEqual(await subject.admin.viewTables('no-such-view'), []);
      });

      if (harness.deadRebuild) {
        const deadRebuild = harness.deadRebuild;
        test("a rebuild that died is listed with its shadow tables' checkpoint and when it last moved", async (subject) => {
          await createView(subject, 'carts');
          const position = await deadRebuild(subject, 'carts');
          const [view] = await subject.admin.views();
          assert.deepEqual([view?.name, view?.generation, view?.rebuilding, view?.shadow?.position], ['carts', 0, true, position]);
          const movedAt = view?.shadow?.updatedAt;
          assert.ok(movedAt instanceof Date && !Number.isNaN(movedAt.getTime()), `a time: ${String(movedAt)}`);
          assert.ok(Math.abs(movedAt.getTime() - Date.now()) < 60_000, 'just now (by the database clock, near enough this one)');
        });
      }
    }

    test('status rows: published, replaced per node, listed in order, with every field', async ({ admin }) => {
      const runners = admin.runners;
      await runners.publish(status());
      await runners.publish(status({ nodeId: 'node-b', role: 'denied-standby', fencingToken: undefined, position: undefined, handled: 0, lastEvent: undefined, lastError: undefined }));
      await runners.publish(status({ name: 'audit', kind: 'subscription', role: 'unelected', work: undefined }));
      await runners.publish(status({ handled: 43 }));
      const rows = await runners.list();
      assert.deepEqual(rows.map((row) => [row.name, row.nodeId, row.role]), [
        ['audit', 'node-a', 'unelected'],
        ['mailer', 'node-a', 'leader'],
        ['mailer', 'node-b', 'denied-standby'],
      ]);
      const [audit, leader, standby] = rows;
      assert.equal(audit?.work, undefined);
      assert.deepEqual(
        { ...leader, heartbeatAt: undefined, heartbeatAgeMs: undefined, lastEvent: leader?.lastEvent?.position },
        { ...status({ handled: 43 }), heartbeatAt: undefined, heartbeatAgeMs: undefined, lastEvent: 12, stale: false },
      );
      assert.deepEqual([standby?.fencingToken, standby?.position, standby?.lastEvent, standby?.lastError], [undefined, undefined, undefined, undefined]);
      const at = leader?.heartbeatAt.getTime() ?? 0;
      assert.ok(Math.abs((leader?.lastEvent?.at.getTime() ?? 0) - (at - 1500)) <= 250, 'the last event\'s age is turned into the time of the store');
      assert.ok((leader?.heartbeatAgeMs ?? -1) >= 0 && (leader?.heartbeatAgeMs ?? Infinity) < 30_000);
    });

    test('status rows: a silent running row turns stale, a stopped one never; prune removes old rows', async ({ admin }) => {
      const runners = admin.runners;
      await runners.publish(status({ heartbeatMs: 10 }));
      await runners.publish(status({ name: 'done', state: 'stopped', role: 'none', heartbeatMs: 10 }));
      assert.equal(await runners.prune(3_600_000), 0, 'nothing is an hour old');
      const rows = await waitUntil(async () => {
        const listed = await runners.list();
        return listed.every((row) => row.heartbeatAgeMs > 300) ? listed : undefined;
      }, { message: 'the rows to age' });
      assert.deepEqual(rows.map((row) => [row.name, row.stale]), [['done', false], ['mailer', true]]);
      await runners.publish(status({ heartbeatMs: 10 }));
      const fresh = (await runners.list()).find((row) => row.name === 'mailer');
      assert.ok(fresh && fresh.heartbeatAgeMs < 150 && !fresh.stale, 'a new heartbeat makes it fresh again');
      assert.equal(await runners.prune(200), 1, 'only the old row is removed');
      assert.deepEqual((await runners.list()).map((row) => row.name), ['mailer']);
    });

    test('status rows: malformed updates are refused', async ({ admin }) => {
      const cases: Array<[string, Partial<RunnerStatusUpdate> | Record<string, unknown>]> = [
        ['an empty name', { name: '' }],
        ['a name with NUL', { name: 'a\u0000b' }],
        ['an unknown kind', { kind: 'cron' }],
        ['an unknown state', { state: 'sleeping' }],
        ['an unknown role', { role: 'boss' }],
        ['a negative count', { handled: -1 }],
        ['a zero heartbeat', { heartbeatMs: 0 }],
        ['a negative work count', { work: { pending: -1, running: 0, hung: 0, retrying: 0, unrecorded: 0, oldestPendingMs: undefined } }],
      ];
      for (const [what, overrides] of cases) await invalid(() => admin.runners.publish({ ...status(), ...overrides } as RunnerStatusUpdate), what);
      await invalid(() => admin.runners.prune(-1), 'a negative prune age');
      assert.deepEqual(await admin.runners.list(), []);
      await admin.runners.publish(status({ lastError: `NUL \u0000 and a lone \ud800 surrogate` }));
      assert.equal((await admin.runners.list())[0]?.lastError, 'NUL \ufffd and a lone \ufffd surrogate', 'an error message keeps what can be stored');
    });

    if (harness.databaseClock) {
      test("status rows: heartbeats are the database's clock, not the runner's", async ({ admin }) => {
        const realNow = Date.now;
        Date.now = () => realNow() + 3_600_000;
        try {
          await admin.runners.publish(status());
          const [row] = await admin.runners.list();
          assert.ok(row && row.heartbeatAgeMs < 60_000 && !row.stale, 'a runner clock an hour ahead does not age the row');
          assert.ok(Math.abs(row.heartbeatAt.getTime() - realNow()) < 60_000, `heartbeatAt ${row.heartbeatAt.toISOString()} is the database's time`);
        } finally {
          Date.now = realNow;
        }
      });
    }
  });
}
