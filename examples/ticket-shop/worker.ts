// One worker process of `npm start -- --workers N`, started by cluster.ts. It runs the sales view and
// the confirmation mailer under leader election: for each of them, one worker leads and the others
// stand by (with `--partitions P`, the mailer's partitions are shared out: each worker leads some). It tells the parent over IPC when it starts or stops leading, and stops gracefully on
// SIGTERM (or SIGINT, or when the parent goes away): in-flight mails finish, checkpoints are saved,
// locks are released, so a standby takes over at once and nothing is sent twice.
import { parseArgs } from 'node:util';
import { configFromEnv, openBackend } from './backend.js';
import { reportingLeadership, startProcessing } from './processing.js';
import type { LeadershipChange } from './processing.js';

/** What a worker tells the parent. */
export type WorkerMessage =
  | { type: 'ready'; worker: number; pid: number }
  | { type: 'leadership'; worker: number; change: LeadershipChange }
  | { type: 'stats'; worker: number; busy: number; sent: number }
  | { type: 'failed'; worker: number; message: string }
  | { type: 'stopped'; worker: number; stopMs: number; busy: number; sent: number };

const args = parseArgs({ options: { worker: { type: 'string' }, partitions: { type: 'string' }, live: { type: 'boolean', default: false } } }).values;
const worker = Number(args.worker);
const partitions = args.partitions === undefined ? undefined : Number(args.partitions);
// `--live` (the --dashboard mode): a dead letter's mail goes through once the demo created the mailbox.
const createdMailboxes = args.live === true;
// The parent may be gone (Ctrl-C reaches every process of the group): a failed send is not an error.
const send = (message: WorkerMessage, then?: () => void): void => {
  if (process.connected && process.send) process.send(message, undefined, {}, () => then?.());
  else then?.();
};

const backend = await openBackend(configFromEnv(), { reset: false, holderId: `worker-${worker}/${process.pid}` });
const election = backend.eskit.locks;
if (!election) throw new Error('the worker opened its backend without leader election');
const locks = reportingLeadership(election, (change) => send({ type: 'leadership', worker, change }));
const processing = await startProcessing(backend, { sentBy: `worker-${worker}`, leaderLock: locks, partitions, createdMailboxes });
const { server } = processing;

let reported = '';
const stats = setInterval(() => {
  const now = `${server.busy}/${server.sent}`;
  if (now === reported) return;
  reported = now;
  send({ type: 'stats', worker, busy: server.busy, sent: server.sent });
}, 100);

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  const started = performance.now();
  clearInterval(stats);
  await processing.stop();
  await backend.close();
  const message: WorkerMessage = { type: 'stopped', worker, stopMs: Math.round(performance.now() - started), busy: server.busy, sent: server.sent };
  send(message, () => process.exit(0));
}

processing.failure.catch((error: unknown) => {
  const message = error instanceof Error ? error.message : String(error);
  console.error(`worker ${worker}: ${message}`);
  send({ type: 'failed', worker, message }, () => process.exit(1));
});
// A second signal while stopping is ignored rather than killing the process mid-handoff.
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
process.on('disconnect', () => void stop());
send({ type: 'ready', worker, pid: process.pid });
