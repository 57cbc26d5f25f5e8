// What runs in the background of the shop: the sales view and the confirmation mailer. The demo runs
// them in its own process, or (with --workers N) in N worker processes under leader election.
import { consoleLogger } from '../../src/index.js';
import type { Automation, Lease, LockRegistry, Logger, SqlView } from '../../src/index.js';
import type { Backend } from './backend.js';
import type { ConcertEvent } from './domain.js';
import { confirmationMailer, FakeMailServer } from './mailer.js';
import type { Confirmation } from './mailer.js';

/** A change of leadership on this process, as the demo reports it. Times are Date.now(). */
export type LeadershipChange =
  | { kind: 'standby'; name: string; at: number }
  | { kind: 'lead'; name: string; token: number; at: number }
  | { kind: 'end'; name: string; token: number; at: number; how: 'released' | 'lost' };

/**
 * A lock registry that tells `report` when this process starts and stops leading. It stamps the end
 * of a lead *before* the lock is released, so a successor's start (after the release, by causality)
 * is never earlier: two leads of one name that overlap in these stamps really did overlap.
 */
export function reportingLeadership(registry: LockRegistry, report: (change: LeadershipChange) => void): LockRegistry & { holderId?: string } {
  return {
    // Runners name this node after it, in their status rows and among a partitioned runner's members.
    holderId: (registry as { holderId?: string }).holderId,
    async acquire(name, options = {}): Promise<Lease> {
      // A partitioned runner's layout lock (`<name>#layout`) is held only while it checks its
      // partition count: no one leads anything by it.
      if (name.endsWith('#layout')) return registry.acquire(name, options);
      const lease = await registry.acquire(name, {
        ...options,
        onWaiting: () => {
          report({ kind: 'standby', name, at: Date.now() });
          options.onWaiting?.();
        },
      });
      const token = lease.fencingToken;
      report({ kind: 'lead', name, token, at: Date.now() });
      let ended = false;
      const end = (how: 'released' | 'lost'): void => {
        if (ended) return;
        ended = true;
        report({ kind: 'end', name, token, at: Date.now(), how });
      };
      lease.signal.addEventListener('abort', () => end('lost'), { once: true });
      return {
        name: lease.name,
        fencingToken: token,
        signal: lease.signal,
        release: async () => {
          end('released');
          await lease.release();
        },
      };
    },
    close: () => registry.close(),
  };
}

export interface Processing {
  readonly view: SqlView<ConcertEvent>;
  readonly mailer: Automation<ConcertEvent, Confirmation>;
  readonly server: FakeMailServer;
  /** Rejects when the view or the mailer fails (and stays pending otherwise). */
  readonly failure: Promise<never>;
  /** Lets in-flight work finish, saves checkpoints and releases leadership. Safe to call twice. */
  stop(): Promise<void>;
}

export interface ProcessingOptions {
  /** Names this process in the mailbox (which process sent each mail). */
  sentBy: string;
  leaderLock?: LockRegistry;
  /** Default: errors only, on stderr (the retries are the point of the demo, not noise). */
  logger?: Logger;
  /** Run the mailer in this many partitions (`--partitions N`). */
  partitions?: number;
  /** `--dashboard`: the mail server also delivers to an undeliverable address once its mailbox was created. */
  createdMailboxes?: boolean;
}

export async function startProcessing(backend: Backend, options: ProcessingOptions): Promise<Processing> {
  const { leaderLock } = options;
  const logger = options.logger ?? consoleLogger('error');
  const created = options.createdMailboxes === true ? (address: string) => backend.mailboxes.exists(address) : undefined;
  const server = new FakeMailServer(backend.mailbox, options.sentBy, created);
  const view = backend.salesView({ leaderLock, logger });
  const mailer = confirmationMailer({ backend: backend.eskit, server, leaderLock, logger, partitions: options.partitions });
  let stopping: Promise<void> | undefined;
  let fail: (error: Error) => void = () => undefined;
  const failure = new Promise<never>((_, reject) => (fail = reject));
  failure.catch(() => undefined);
  // Once stop() was called, whatever happens while shutting down is not a failure of the work.
  const watch = (what: string, stopped: Promise<{ state: string; error: Error | undefined }>): void => {
    stopped.then(
      (status) => {
        if (status.state === 'failed' && !stopping) fail(new Error(`the ${what} failed: ${status.error?.message ?? 'unknown error'}`, { cause: status.error }));
      },
      (error: unknown) => {
        if (!stopping) fail(error instanceof Error ? error : new Error(String(error)));
      },
    );
  };
  await view.start();
  await mailer.start();
  watch('sales view', view.whenStopped());
  watch('confirmation mailer', mailer.whenStopped());
  return {
    view,
    mailer,
    server,
    failure,
    stop: () => (stopping ??= Promise.all([view.stop(), mailer.stop()]).then(() => undefined)),
  };
}
