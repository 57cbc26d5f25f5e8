// What core's index (so `eskit/adapter`) exports of personal data: the types and the key store
// contract, the pieces a key store of your own (a KMS) needs, and the sealing that copies of personal
// data go through. The root entry picks the public names from here.
export { isRedacted, REDACTED } from './types.js';
export type { ForgetReport, ForgetResult, Personal, PersonalDataDefinition, PersonalField, Redacted, SubjectKey, SubjectKeyStore } from './types.js';
export { newDataKey } from './cipher.js';
export { checkSubject, PersonalData, personalDataOf, personalKidsOf } from './personal-data.js';
export { ERASED_ERROR, SealedDeadLetterStore } from './sealed-dead-letters.js';
export { PersonalDataWithheldError } from './withheld.js';
export type { PersonalDataOptions } from './personal-data.js';
export type { CompiledPersonal } from './fields.js';
