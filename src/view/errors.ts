import { describeError, ErrorCode, EskitError } from '../core/errors.js';

// ViewFencedError lives in core (src/core/errors.ts): the adapters raise it.

/** A rebuild stopped because `evolve` kept failing on one event. The live view is unchanged. */
export class RebuildFailedError extends EskitError {
  constructor(
    readonly view: string,
    readonly position: number,
    cause: unknown,
  ) {
    super(
      ErrorCode.HandlerFailed,
      `Rebuilding view "${view}" stopped at the event at position ${position}: ${describeError(cause)}. ` +
        'The live view is unchanged and keeps serving. Fix evolve (or give the view a deadLetters store to skip such events), then rebuild again.',
      { cause },
    );
  }
}
