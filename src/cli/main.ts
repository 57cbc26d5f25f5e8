// The `eskit` command: `node dist/cli/main.js` (bin/eskit.js in the published package), or
// `node --import tsx src/cli/main.ts` from a checkout.
import { run } from './run.js';

const controller = new AbortController();
let interrupts = 0;
const interrupt = (): void => {
  interrupts += 1;
  // A second Ctrl-C means now.
  if (interrupts > 1) process.exit(130);
  controller.abort(new Error('interrupted'));
};
process.on('SIGINT', interrupt);
process.on('SIGTERM', interrupt);
// `eskit events tail | head`: the reader went away; stop quietly.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0);
  throw error;
});

const code = await run(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env, signal: controller.signal });
process.exitCode = code;
// Everything is closed by now; should a connection linger anyway, do not hang the shell.
setTimeout(() => process.exit(code), 2000).unref();
