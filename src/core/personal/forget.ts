// What `store.forget(subject)` does, apart from the store: destroy the keys, then record the erasure
// as `$subject.forgotten` in the subject's stream, so that views can clear their copies.
import { newEventId } from '../event-id.js';
import { describeError, ErrorCode, EskitError, InvalidArgumentError, isEskitError } from '../errors.js';
import { SUBJECT_FORGOTTEN, subjectStreamId } from '../lifecycle.js';
import type { SubjectForgottenData } from '../lifecycle.js';
import { isStorableText, unstorableTextReason } from '../validate.js';
import { checkSubject } from './personal-data.js';
import type { PersonalData } from './personal-data.js';
import type { ForgetReport } from './types.js';

/** The event to write, as the store's `writeEvents` takes it. */
export interface SubjectForgottenRow {
  id: string;
  type: string;
  data: string;
  metadata: string;
}

/**
 * Forgets `subject` with `personal`'s key store, then writes the event with `write` (the store's
 * append primitive, any expected version); resolves with the report and the event's position.
 */
export async function forgetSubject(personal: PersonalData, subject: string, write: (streamId: string, event: SubjectForgottenRow) => Promise<number>): Promise<ForgetReport> {
  checkSubject(subject);
  // Checked before anything is destroyed: the event's stream id holds the subject.
  if (!isStorableText(subject)) {
    throw new InvalidArgumentError(`Cannot forget subject ${JSON.stringify(subject)}: it ${unstorableTextReason(subject)}, which no store can hold. Nothing was changed.`);
  }
  const result = await personal.forget(subject);
  const data: SubjectForgottenData = { subject, keysDestroyed: result.keysDestroyed };
  try {
    const position = await write(subjectStreamId(subject), { id: newEventId(), type: SUBJECT_FORGOTTEN, data: JSON.stringify(data), metadata: '{}' });
    return { ...result, position };
  } catch (error) {
    throw new EskitError(
      isEskitError(error) ? error.code : ErrorCode.Connection,
      `Subject "${subject}" is forgotten (its keys are destroyed), but recording $subject.forgotten failed: ${describeError(error)}. ` +
        'Call forget again: it destroys nothing more and appends the event, so that views clear their rows.',
      { cause: error },
    );
  }
}
