import { ErrorCode, EskitError } from '../error-codes.js';

/** An append (or `keyFor`) of personal data for a subject that `forget` erased. */
export class SubjectForgottenError extends EskitError {
  constructor(readonly subject: string) {
    super(
      ErrorCode.SubjectForgotten,
      `Subject "${subject}" was forgotten: its personal data cannot be written again under its old keys, and no new key was allowed. ` +
        'Nothing was written. If this person may have personal data again (they came back), call allowNewKey(subject) first; ' +
        'their data from before the erasure stays unreadable.',
    );
  }
}

/**
 * A personal field names a key the key store never had: the store lost it, or the events were copied
 * from another database without their keys. Never read as "forgotten", which it may not be.
 */
export class SubjectKeyMissingError extends EskitError {
  constructor(
    readonly kid: string,
    readonly position?: number,
  ) {
    super(
      ErrorCode.SubjectKeyMissing,
      `The key "${kid}" of a personal field${position === undefined ? '' : ` of the event at position ${position}`} is not in the key store, ` +
        'which never destroys a key without keeping its id. The key store in use is not the one that encrypted this event ' +
        '(another database, a restored backup without its keys, a plugged-in key store pointed elsewhere): point eskit at the right one.',
    );
  }
}
