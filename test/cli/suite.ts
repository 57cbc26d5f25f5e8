// Every CLI command against one backend, on the application of world.ts. Run by sqlite.test.ts and
// postgres.test.ts. The tests run in order and share the world; each works on names of its own.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { StatusReport } from '../../src/cli/commands/status.js';
import type { DeadLetter } from '../../src/core/dead-letter.js';
import { POSTGRES_MIGRATIONS } from '../../src/postgres/index.js';
import { SQLITE_MIGRATIONS } from '../../src/sqlite/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { cli, parseJson } from './helpers.js';
import type { Capture } from './helpers.js';
import { createWorld, deadCartsRebuild, HOLDER } from './world.js';
import type { World } from './world.js';

const CONFIG = fileURLToPath(new URL('./fixtures/eskit.config.ts', import.meta.url));
const FIXTURES = fileURLToPath(new URL('./fixtures/', import.meta.url));
const NO_SUCH_LETTER = '01900000-0000-7000-8000-000000000000';
const LATEST = { sqlite: SQLITE_MIGRATIONS.length, postgres: POSTGRES_MIGRATIONS.length };

export function cliSuite(kind: 'sqlite' | 'postgres'): void {
  describe(`eskit CLI on ${kind}`, () => {
    let world: World;
    const run = (...args: string[]) => cli([...args, ...world.db]);
    const status = async (): Promise<StatusReport> => {
      const result = await run('status', '--json');
      assert.equal(result.code, 0, result.stderr);
      return parseJson<StatusReport>(result);
    };
    const entry = (report: StatusReport, name: string) => {
      const found = report.entries.find((candidate) => candidate.name === name);
      assert.ok(found, `status has no entry "${name}": ${JSON.stringify(report.entries.map((e) => e.name))}`);
      return found;
    };

    before(async () => {
      world = await createWorld(kind);
    });
    after(async () => {
      await world?.stop();
    });

    it('migrate: an up-to-date database is left as it is', async () => {
      const result = await run('migrate');
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, new RegExp(`up to date \\(schema version ${LATEST[kind]}\\)`));
      const asJson = parseJson<{ applied: number[]; version: number }>(await run('migrate', '--json'));
      assert.deepEqual(asJson.applied, []);
      assert.equal(asJson.version, LATEST[kind]);
    });

    it('status --json: position, lag, state, leader, tokens, dead letters and view versions', async () => {
      const report = await status();
      assert.equal(report.head, 5);
      assert.equal(report.schemaVersion, LATEST[kind]);
      assert.deepEqual(report.entries.map((e) => e.name), ['audit', 'carts', 'mailer', 'notifier', 'stopped-sub']);

      const audit = entry(report, 'audit');
      assert.equal(audit.kind, 'subscription', 'its status row says what it is');
      assert.equal(audit.state, 'unknown', 'no lock row: no leader election');
      assert.equal(audit.position, 5);
      assert.equal(audit.lag, 0);
      assert.equal(audit.leader, null);

      const stopped = entry(report, 'stopped-sub');
      assert.equal(stopped.state, 'no-leader');
      assert.deepEqual(stopped.deadLetters, { dead: 2, redrive: 0 });
      assert.ok((stopped.fencingToken.checkpoint ?? 0) >= 1, 'claimed by a leader');

      const mailer = entry(report, 'mailer');
      assert.equal(mailer.state, 'leading');
      assert.equal(mailer.leader?.holder, HOLDER);
      if (kind === 'sqlite') assert.equal(mailer.fencingToken.lease, mailer.fencingToken.checkpoint, 'the leader claimed the checkpoint with its token');
      else assert.equal(mailer.fencingToken.lease, null, 'PostgreSQL draws tokens from one sequence: none per lock');
      if (kind === 'postgres') {
        const session = world.lockSession?.();
        assert.equal(mailer.leader?.pid, session?.pid, 'the pid of the session holding the advisory lock');
        assert.equal(mailer.leader?.applicationName, session?.applicationName);
        assert.ok(mailer.leader?.clientAddr, 'connected over TCP, so pg_stat_activity has a client address');
      } else {
        assert.ok(mailer.leader?.expiresAt && Date.parse(mailer.leader.expiresAt) > Date.now() - 1000, 'an unexpired lease');
      }

      const notifier = entry(report, 'notifier');
      assert.equal(notifier.kind, 'automation', 'told apart by its execute-stage dead letter');
      assert.deepEqual(notifier.deadLetters, { dead: 1, redrive: 0 });
      assert.equal(notifier.state, 'leading');

      const carts = entry(report, 'carts');
      assert.equal(carts.kind, 'view');
      assert.deepEqual(carts.view, { version: 1, generation: 0, rebuilding: false, shadow: null });
      assert.equal(carts.state, 'leading');
      assert.equal(carts.position, 4, 'the last ItemAdded: the view filters by type');
      assert.equal(carts.lag, 1);
    });

    it('status: a table for people, one name, and an unknown name', async () => {
      const result = await run('status');
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /head 5/);
      assert.match(result.stdout, /^NAME\s+KIND\s+POSITION\s+LAG\s+STATE/m);
      assert.match(result.stdout, new RegExp(`^mailer\\s+subscription\\s+5\\s+0\\s+leading\\s+.*${HOLDER}`, 'm'));
      assert.match(result.stdout, /^carts\s+view \(setup v1, gen 0\)/m);
      assert.match(result.stdout, /^audit\s+subscription\s+5\s+0\s+unknown/m);

      const one = parseJson<StatusReport>(await run('status', 'audit', '--json'));
      assert.deepEqual(one.entries.map((e) => e.name), ['audit']);

      const unknown = await run('status', 'nope');
      assert.equal(unknown.code, 1);
      assert.match(unknown.stderr, /^eskit: no subscription, automation or view "nope" \(known: "audit", "carts", "mailer", "notifier", "stopped-sub"\)/);
    });

    it('events read: a stream, forward, backward, as JSON; an unknown stream fails', async () => {
      const result = await run('events', 'read', 'cart-1');
      assert.equal(result.code, 0, result.stderr);
      const lines = result.stdout.trim().split('\n');
      assert.equal(lines.length, 3);
      assert.match(lines[0] as string, /^1 {2}cart-1@1 {2}ItemAdded {2}\d{4}-\d\d-\d\dT[\d:.]+Z {2}\{"sku":"a"\}$/);

      const backward = await run('events', 'read', 'cart-1', '--backward', '--limit', '1', '--json');
      const [last] = backward.stdout.trim().split('\n').map((line) => JSON.parse(line) as { position: number; streamVersion: number; data: unknown });
      assert.deepEqual([last?.position, last?.streamVersion, last?.data], [3, 3, { sku: 'c' }]);

      const from = await run('events', 'read', 'cart-1', '--from', '2');
      assert.equal(from.stdout.trim().split('\n').length, 2);

      const missing = await run('events', 'read', 'cart-9');
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /^eskit: no stream "cart-9"/);
    });

    it('events tail: the log from a position, a type filter, and following live until stopped', async () => {
      const all = await run('events', 'tail', '--from', '1', '--no-follow');
      assert.equal(all.code, 0, all.stderr);
      assert.deepEqual(all.stdout.trim().split('\n').map((line) => Number(line.split(' ')[0])), [1, 2, 3, 4, 5]);

      const orders = await run('events', 'tail', '--from', '1', '--no-follow', '--type', 'OrderPlaced', '--json');
      assert.deepEqual(orders.stdout.trim().split('\n').map((line) => (JSON.parse(line) as { type: string }).type), ['OrderPlaced']);

      const streamOf = (line: string): string => (line.split(/\s+/)[1] as string).split('@')[0] as string;
      const carts = await run('events', 'tail', '--from', '1', '--no-follow', '--category', 'cart');
      assert.equal(carts.code, 0, carts.stderr);
      const cartLines = all.stdout.trim().split('\n').filter((line) => streamOf(line).startsWith('cart-'));
      assert.ok(cartLines.length > 0 && cartLines.length < 5, 'the world has carts and other streams');
      assert.deepEqual(carts.stdout.trim().split('\n'), cartLines);
      const badCategory = await run('events', 'tail', '--from', '1', '--no-follow', '--category', 'cart-1');
      assert.notEqual(badCategory.code, 0);
      assert.match(badCategory.stderr, /--category takes a category name without '-'/);

      // Live: starts at the head, prints what is appended after, until the signal.
      const stop = new AbortController();
      let out: Capture | undefined;
      const following = cli(['events', 'tail', '--interval', '50', ...world.db], { signal: stop.signal, onStart: (stdout) => (out = stdout) });
      // The first append may land before tail read the head; the second is after it either way.
      await world.store.append('cart-3', [{ type: 'ItemAdded', data: { sku: 'live-1' } }]);
      await waitUntil(async () => {
        if (out?.text.includes('live-2')) return true;
        await world.store.append('cart-3', [{ type: 'ItemAdded', data: { sku: 'live-2' } }]);
        return false;
      }, { timeoutMs: 10_000, intervalMs: 300, message: 'tail to print the live event' });
      stop.abort();
      const result = await following;
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /cart-3@\d+ {2}ItemAdded .*"live-2"/);
      assert.doesNotMatch(result.stdout, /cart-1@/, 'tail starts at the head');
    });

    it('dlq list and show: table, JSON, filters, one letter in full; unknown ids and sources fail', async () => {
      const list = await run('dlq', 'list');
      assert.equal(list.code, 0, list.stderr);
      assert.match(list.stdout, /^ID\s+SOURCE\s+STAGE\s+STATUS\s+EVENT/m);
      assert.ok(list.stdout.includes(world.letters.notifier) && list.stdout.includes(world.letters.mailer));
      assert.match(list.stdout, /smtp server down/);

      const notifier = parseJson<DeadLetter[]>(await run('dlq', 'list', '--source', 'notifier', '--json'));
      assert.deepEqual(notifier.map((letter) => [letter.id, letter.stage, letter.key, letter.payload]), [[world.letters.notifier, 'execute', 'order-1', { total: 10 }]]);

      const paged = await run('dlq', 'list', '--limit', '1');
      const next = /Showing 1 of 4\. Next page: (eskit dlq list --after \S+ --limit 1)/.exec(paged.stdout);
      assert.ok(next, paged.stdout);
      // Every page but the last says how to get the next one, with the same page size.
      const second = await run(...(next[1] as string).split(' ').slice(1));
      assert.match(second.stdout, /Showing 1 of 4\. Next page: eskit dlq list --after \S+ --limit 1/);
      const tail = await run('dlq', 'list', '--limit', '4');
      assert.doesNotMatch(tail.stdout, /Next page/, 'the last page says nothing more');

      const oldest = parseJson<DeadLetter[]>(await run('dlq', 'list', '--json')).map((letter) => letter.id);
      const newest = parseJson<DeadLetter[]>(await run('dlq', 'list', '--newest', '--json')).map((letter) => letter.id);
      assert.deepEqual(newest, [...oldest].reverse(), '--newest: newest first');
      const newestPaged = await run('dlq', 'list', '--newest', '--limit', '1');
      const newestNext = /Next page: (eskit dlq list --after \S+ --newest --limit 1)/.exec(newestPaged.stdout);
      assert.ok(newestNext, newestPaged.stdout);
      const newestSecond = parseJson<DeadLetter[]>(await run(...(newestNext[1] as string).split(' ').slice(1), '--json'));
      assert.deepEqual(newestSecond.map((letter) => letter.id), [newest[1]], 'the next page keeps the order');

      const show = await run('dlq', 'show', world.letters.notifier);
      assert.equal(show.code, 0, show.stderr);
      assert.match(show.stdout, /source {4}notifier/);
      assert.match(show.stdout, /stage {5}execute/);
      assert.match(show.stdout, /Attempts \(1\):\n {2}1\. \S+ {2}Error: smtp server down/);
      assert.match(show.stdout, /"total": 10/);
      assert.match(show.stdout, /#5 OrderPlaced in stream "order-1"/);
      const shown = parseJson<DeadLetter & { event: { position: number } }>(await run('dlq', 'show', world.letters.notifier, '--json'));
      assert.equal(shown.event.position, 5);

      const unknownId = await run('dlq', 'show', NO_SUCH_LETTER);
      assert.equal(unknownId.code, 1);
      assert.match(unknownId.stderr, /^eskit: no dead letter 01900000-/);
      const notAnId = await run('dlq', 'show', 'abc');
      assert.equal(notAnId.code, 2);
      const unknownSource = await run('dlq', 'list', '--source', 'nope');
      assert.equal(unknownSource.code, 1);
      assert.match(unknownSource.stderr, /no subscription, automation or view "nope"/);
      const badStatus = await run('dlq', 'list', '--status', 'gone');
      assert.equal(badStatus.code, 2);
    });

    it("dlq retry: marks an automation's letter, and the leading node runs it again and removes it", async () => {
      world.notifier.failing = false;
      const result = await run('dlq', 'retry', world.letters.notifier);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /Marked dead letter .* of "notifier" for redrive/);
      assert.match(result.stdout, new RegExp(`led by ${HOLDER}`));
      await waitUntil(async () => (await world.deadLetters.get(world.letters.notifier)) === undefined, { timeoutMs: 10_000, message: 'the redrive to succeed' });
      assert.deepEqual(world.notifier.executed, ['order-1']);
      const again = await run('dlq', 'retry', world.letters.notifier);
      assert.equal(again.code, 1, 'the letter is gone');
    });

    it("dlq retry: refuses a subscription's letters (nothing would run them) unless forced; usage errors", async () => {
      const refused = await run('dlq', 'retry', world.letters.mailer);
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /only automations run redrives/);
      assert.equal((await world.deadLetters.get(world.letters.mailer))?.status, 'dead');
      const forced = await run('dlq', 'retry', world.letters.mailer, '--force');
      assert.equal(forced.code, 0, forced.stderr);
      assert.equal((await world.deadLetters.get(world.letters.mailer))?.status, 'redrive');

      const all = await run('dlq', 'retry', '--all', '--source', 'stopped-sub');
      assert.equal(all.code, 1);
      assert.equal(await world.deadLetters.count({ source: 'stopped-sub', status: 'dead' }), 2, 'nothing was marked');

      assert.equal((await run('dlq', 'retry')).code, 2, 'neither an id nor --all');
      assert.equal((await run('dlq', 'retry', world.letters.mailer, '--all')).code, 2, 'both');
      assert.equal((await run('dlq', 'retry', '--source', 'mailer')).code, 2, '--source without --all');
    });

    it('dlq discard: one letter; all of a source only with --yes', async () => {
      const [first] = world.letters.stopped;
      const one = await run('dlq', 'discard', first as string);
      assert.equal(one.code, 0, one.stderr);
      assert.equal(await world.deadLetters.get(first as string), undefined);
      assert.equal((await run('dlq', 'discard', first as string)).code, 1, 'already gone');

      const unconfirmed = await run('dlq', 'discard', '--all', '--source', 'stopped-sub');
      assert.equal(unconfirmed.code, 1);
      assert.match(unconfirmed.stderr, /this would discard 1 dead letter of "stopped-sub" for good\. Add --yes/);
      assert.equal(await world.deadLetters.count({ source: 'stopped-sub' }), 1);

      const confirmed = await run('dlq', 'discard', '--all', '--source', 'stopped-sub', '--yes');
      assert.equal(confirmed.code, 0, confirmed.stderr);
      assert.equal(await world.deadLetters.count({ source: 'stopped-sub' }), 0);

      assert.equal((await run('dlq', 'discard', '--all', '--yes')).code, 2, '--all needs --source');
      assert.equal((await run('dlq', 'discard', '--all', '--source', 'nope', '--yes')).code, 1, 'unknown source');
    });

    it('subscription reset: a stopped subscription, fenced; no leader election warns; views, unknown names and bad positions are refused', async () => {
      const before = entry(await status(), 'stopped-sub');
      const result = await run('subscription', 'reset', 'stopped-sub', '--to', '2', '--json');
      assert.equal(result.code, 0, result.stderr);
      const outcome = parseJson<{ previous: number; position: number; fencingToken: number; fencing: string }>(result);
      assert.equal(outcome.previous, 5);
      assert.equal(outcome.position, 2);
      assert.equal(await world.checkpoints.load('stopped-sub'), 2);
      const after = entry(await status(), 'stopped-sub');
      if (kind === 'sqlite') {
        // The lease row's token is raised above every one handed out, and the checkpoint takes it.
        assert.equal(outcome.fencing, 'lease');
        assert.equal(outcome.fencingToken, (before.fencingToken.lease as number) + 1);
        assert.deepEqual(after.fencingToken, { lease: outcome.fencingToken, checkpoint: outcome.fencingToken });
      } else {
        assert.equal(outcome.fencing, 'checkpoint');
        assert.equal(outcome.fencingToken, (before.fencingToken.checkpoint as number) + 1);
        assert.deepEqual(after.fencingToken, { lease: null, checkpoint: outcome.fencingToken });
      }
      // The next leader's token is above the reset's, so it claims the checkpoint and goes on from 2.
      const lease = await world.locks.acquire('stopped-sub');
      assert.equal(await world.checkpoints.claim('stopped-sub', lease.fencingToken), 2);
      await lease.release();

      const audit = await run('subscription', 'reset', 'audit', '--to', 'head');
      assert.equal(audit.code, 0, audit.stderr);
      assert.match(audit.stdout, /Reset "audit" from 5 to \d+\./);
      assert.match(audit.stderr, /warning: "audit" uses no leader election/);

      const view = await run('subscription', 'reset', 'carts', '--to', '0');
      assert.equal(view.code, 1);
      assert.match(view.stderr, /"carts" is a view.*eskit view rebuild carts/);
      const unknown = await run('subscription', 'reset', 'nope', '--to', '0');
      assert.equal(unknown.code, 1);
      assert.match(unknown.stderr, /no subscription or automation "nope" \(known: "audit", "mailer", "notifier", "stopped-sub"\)/);
      const beyond = await run('subscription', 'reset', 'audit', '--to', '999');
      assert.equal(beyond.code, 1);
      assert.match(beyond.stderr, /beyond the head/);
      assert.equal((await run('subscription', 'reset', 'audit', '--to', 'x')).code, 2);
      assert.equal((await run('subscription', 'reset', 'audit')).code, 2, '--to is required');
    });

    it('subscription reset: refused while a node leads, naming it; --force fences the leader, which replays from the new position', async () => {
      const refused = await run('subscription', 'reset', 'mailer', '--to', '0');
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, new RegExp(`"mailer" is being processed: its lock is held by ${HOLDER}`));
      if (kind === 'postgres') assert.match(refused.stderr, new RegExp(`pid ${world.lockSession?.()?.pid}`));
      assert.notEqual(await world.checkpoints.load('mailer'), 0, 'nothing changed');

      const seenBefore = world.mailerSeen.filter((position) => position === 1).length;
      const forced = await run('subscription', 'reset', 'mailer', '--to', '0', '--force', '--json');
      assert.equal(forced.code, 0, forced.stderr);
      const outcome = parseJson<{ fencingToken: number; heldBy: { holder: string } }>(forced);
      assert.equal(outcome.heldBy.holder, HOLDER);
      // The old leader may handle this event with its old token, but it cannot save its position
      // over the reset: it is refused, takes the lock again and replays from the beginning.
      const { position } = await world.store.append('cart-4', [{ type: 'ItemAdded', data: { sku: 'after-reset' } }]);
      await waitUntil(() => world.mailerSeen.filter((p) => p === 1).length > seenBefore, { timeoutMs: 15_000, message: 'mailer to replay position 1' });
      await waitUntil(async () => (await world.checkpoints.load('mailer')) === position, { timeoutMs: 15_000, message: 'mailer to catch up again' });
      const mailer = entry(await status(), 'mailer');
      assert.equal(mailer.state, 'leading');
      assert.ok((mailer.fencingToken.checkpoint as number) > outcome.fencingToken, 'a new leadership, with a token above the reset');
    });

    it('view rebuild: replays into shadow tables and swaps in while the view runs, with progress', async () => {
      const result = await cli(['view', 'rebuild', 'carts', '--config', CONFIG, ...world.db]);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /^Rebuilt view "carts": \d+ events in .*, swapped in at position \d+ \(generation 1\)\.$/m);
      assert.match(result.stderr, /rebuilding carts: 0% \(0\/\d+ events\)/);
      assert.match(result.stderr, /rebuilding carts: 100% \((\d+)\/\1 events\)/);
      assert.deepEqual(entry(await status(), 'carts').view, { version: 1, generation: 1, rebuilding: false, shadow: null });
      // The running view saw the swap, and keeps its tables up to date.
      const { position } = await world.store.append('cart-5', [{ type: 'ItemAdded', data: { sku: 'after-rebuild' } }]);
      await world.view.waitFor(position, { timeoutMs: 10_000 });

      // On a terminal, one redrawn line; the config found in the working directory; JSON.
      const tty = await cli(['view', 'rebuild', 'carts', '--json', ...world.db], { cwd: FIXTURES, tty: true });
      assert.equal(tty.code, 0, tty.stderr);
      assert.match(tty.stderr, /\rrebuilding carts \[#+\] 100% /);
      assert.equal(parseJson<{ generation: number }>(tty).generation, 2);

      // A rebuild that died is resumed from its shadow tables, and says so; --fresh starts over.
      const diedAt = await deadCartsRebuild(world.host, 2);
      // Until then, status shows where the dead rebuild's shadow tables got, and when they last moved.
      const dead = entry(await status(), 'carts').view;
      const movedAt = dead?.shadow?.updatedAt ?? '';
      assert.deepEqual(dead, { version: 1, generation: 2, rebuilding: true, shadow: { position: diedAt, updatedAt: movedAt } });
      assert.ok(Math.abs(Date.now() - Date.parse(movedAt)) < 60_000, `the shadow's checkpoint moved just now (by the database's clock): ${movedAt}`);
      const text = await run('status', 'carts');
      assert.equal(text.code, 0, text.stderr);
      assert.match(text.stdout, new RegExp(`^carts\\s+view \\(setup v1, gen 2\\)\\s+\\d+\\s+\\d+\\s+leading, rebuilding \\(shadow at ${diedAt}, [\\d.]+ (ms|s) ago\\)\\s`, 'm'));
      const resumed = await cli(['view', 'rebuild', 'carts', '--config', CONFIG, ...world.db]);
      assert.equal(resumed.code, 0, resumed.stderr);
      assert.match(
        resumed.stdout,
        new RegExp(`^Rebuilt view "carts", resuming from position ${diedAt} \\(where the shadow tables of a rebuild that died had got\\): \\d+ events in .*\\(generation 3\\)\\.$`, 'm'),
      );
      assert.deepEqual(entry(await status(), 'carts').view, { version: 1, generation: 3, rebuilding: false, shadow: null }, 'swapped in: no shadow left');
      assert.doesNotMatch((await run('status', 'carts')).stdout, /rebuilding/);
      await deadCartsRebuild(world.host, 2);
      const fresh = await cli(['view', 'rebuild', 'carts', '--fresh', '--json', '--config', CONFIG, ...world.db]);
      assert.equal(fresh.code, 0, fresh.stderr);
      const { generation, resumedFrom } = parseJson<{ generation: number; resumedFrom: number }>(fresh);
      assert.deepEqual({ generation, resumedFrom }, { generation: 4, resumedFrom: 0 });

      const unknown = await cli(['view', 'rebuild', 'nope', '--config', CONFIG, ...world.db]);
      assert.equal(unknown.code, 1);
      assert.match(unknown.stderr, /^eskit: no view "nope" \(known: "carts"\)\. The views come from .*eskit\.config\.ts/);
      const noConfig = await cli(['view', 'rebuild', 'carts', ...world.db], { cwd: tmpdir() });
      assert.equal(noConfig.code, 1);
      assert.match(noConfig.stderr, /no eskit\.config\.js, eskit\.config\.mjs, eskit\.config\.ts, eskit\.config\.mts in /);
    });
  });
}
