// `npm install` in a fresh clone must leave package-lock.json as committed: a lockfile npm rewrites
// (say, because package.json gained a `bin` or a peer dependency the lockfile does not record) shows up
// as a change nobody made. `--package-lock-only` recomputes the lockfile as `npm install` would,
// without touching node_modules.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

it('npm install leaves package-lock.json as committed', { timeout: 120_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'eskit-lockfile-'));
  try {
    await copyFile(join(REPO, 'package.json'), join(dir, 'package.json'));
    await copyFile(join(REPO, 'package-lock.json'), join(dir, 'package-lock.json'));
    const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('npm_') || key === 'npm_config_cache' || key === 'npm_config_registry'));
    await promisify(execFile)('npm', ['install', '--package-lock-only', '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: dir, env });
    const [before, after] = await Promise.all([readFile(join(REPO, 'package-lock.json'), 'utf8'), readFile(join(dir, 'package-lock.json'), 'utf8')]);
    assert.equal(after, before, 'npm rewrote package-lock.json: run `npm install` and commit the lockfile it writes');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
