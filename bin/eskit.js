#!/usr/bin/env node
// The `eskit` command of the published package: the compiled CLI in dist/ (`npm run build` writes it).
try {
  await import('../dist/cli/main.js');
} catch (error) {
  if (error?.code === 'ERR_MODULE_NOT_FOUND' && String(error.message).includes('dist/cli/main.js')) {
    process.stderr.write('eskit: the CLI is not built (dist/cli/main.js is missing). Run `npm run build`, or use `node --import tsx src/cli/main.ts`.\n');
    process.exit(1);
  }
  throw error;
}
