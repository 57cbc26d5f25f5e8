// Shared by the conformance suites of the stores whose writes a leader fences; not exported from
// eskit/testing.
import assert from 'node:assert/strict';
import { ErrorCode, isEskitError } from '../core/errors.js';
import type { FencedError } from '../core/errors.js';

/** Rejects unless `fn` fails with a FencedError for `name` carrying exactly these tokens. */
export async function assertFenced(fn: () => Promise<unknown>, name: string, token: number, current: number, message?: string): Promise<void> {
  await assert.rejects(fn, (error: unknown) => {
    assert.ok(isEskitError(error, ErrorCode.Fenced), `${message ?? 'expected ESKIT_FENCED'}: got ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`);
    const fenced = error as FencedError;
    assert.deepEqual(
      { lockName: fenced.lockName, fencingToken: fenced.fencingToken, currentToken: fenced.currentToken },
      { lockName: name, fencingToken: token, currentToken: current },
      message,
    );
    return true;
  });
}

/** Fences a test can pass that are not a `WriteFence`: each must be refused before anything is written. */
export const MALFORMED_FENCES: ReadonlyArray<[what: string, options: unknown]> = [
  ['options not an object', 'fence'],
  ['options null', null],
  ['fence null', { fence: null }],
  ['fence not an object', { fence: 'cp' }],
  ['empty checkpoint name', { fence: { checkpoint: '', fencingToken: 1 } }],
  ['checkpoint name not a string', { fence: { checkpoint: 7, fencingToken: 1 } }],
  ['no checkpoint name', { fence: { fencingToken: 1 } }],
  ['no token', { fence: { checkpoint: 'cp' } }],
  ['negative token', { fence: { checkpoint: 'cp', fencingToken: -1 } }],
  ['fractional token', { fence: { checkpoint: 'cp', fencingToken: 1.5 } }],
  ['NaN token', { fence: { checkpoint: 'cp', fencingToken: Number.NaN } }],
  ['unsafe token', { fence: { checkpoint: 'cp', fencingToken: Number.MAX_SAFE_INTEGER + 1 } }],
  ['string token', { fence: { checkpoint: 'cp', fencingToken: '3' } }],
];
