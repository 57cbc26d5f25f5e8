import { describeError, ErrorCode, EskitError } from '../core/errors.js';

/**
 * A view's write was refused because its tables changed under it. Carries `ESKIT_FENCED`, so the
 * subscription runner treats it as lost leadership: it rolls back, reloads the checkpoint and goes on
 * from there. Users rarely see it (a log line) unless they call the internals themselves.
 * - 'swapped': a rebuild swapped new tables in since this node loaded the checkpoint;
 * - 'superseded': another rebuild of the same view started after this one, which therefore stops.
 */
export class ViewFencedError extends EskitError {
  constructor(
    readonly view: string,
    readonly reason: 'swapped' | 'superseded',
  ) {
    super(
      ErrorCode.Fenced,
      reason === 'swapped'
        ? `View "${view}" was rebuilt and its new tables swapped in since this node loaded its checkpoint; ` +
            'the write was rolled back and the view resumes from the new checkpoint.'
        : `Another rebuild of view "${view}" started and took over its shadow tables; this rebuild stopped and changed nothing. ` +
            'Run one rebuild of a view at a time.',
    );
  }
}

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
