// AES-256-GCM with node:crypto: one personal field as an envelope, and a whole value sealed under
// several subjects' keys at once (snapshots, dead letters). Everything else about personal data builds
// on these four functions.
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';

/** How one encrypted personal field is stored in the event's data. */
export interface FieldEnvelope {
  /** Format version. */
  $enc: 1;
  /** The subject key's id. */
  kid: string;
  /** Base64 of the 12-byte nonce. */
  iv: string;
  /** Base64 of the ciphertext followed by the 16-byte GCM tag. */
  ct: string;
}

/** A value sealed under the keys of every subject it holds data of: readable only while all of them live. */
export interface SealedValue {
  $sealed: 1;
  kids: string[];
  iv: string;
  ct: string;
}

const IV_BYTES = 12;
const TAG_BYTES = 16;

export function isFieldEnvelope(value: unknown): value is FieldEnvelope {
  if (typeof value !== 'object' || value === null) return false;
  const envelope = value as Partial<FieldEnvelope>;
  return envelope.$enc === 1 && typeof envelope.kid === 'string' && typeof envelope.iv === 'string' && typeof envelope.ct === 'string';
}

export function isSealedValue(value: unknown): value is SealedValue {
  if (typeof value !== 'object' || value === null) return false;
  const sealed = value as Partial<SealedValue>;
  return sealed.$sealed === 1 && Array.isArray(sealed.kids) && typeof sealed.iv === 'string' && typeof sealed.ct === 'string';
}

/**
 * `value` (any JSON value) encrypted with the subject's key. The associated data binds it to its event
 * and field: an envelope copied into another event or field does not decrypt.
 */
export function encryptField(value: unknown, kid: string, key: Uint8Array, eventId: string, path: string): FieldEnvelope {
  const { iv, ct } = encrypt(JSON.stringify(value), key, fieldContext(eventId, path));
  return { $enc: 1, kid, iv, ct };
}

/** The field's value; throws (a tampered or misplaced envelope, a wrong key) when it does not authenticate. */
export function decryptField(envelope: FieldEnvelope, key: Uint8Array, eventId: string, path: string): unknown {
  return JSON.parse(decrypt(envelope.iv, envelope.ct, key, fieldContext(eventId, path)));
}

/** `value` sealed under every key of `keys` (by kid), for the purpose `context` names. */
export function sealValue(value: unknown, keys: ReadonlyMap<string, Uint8Array>, context: string): SealedValue {
  const kids = [...keys.keys()].sort();
  const { iv, ct } = encrypt(JSON.stringify(value), derivedKey(kids, keys, context), `eskit:sealed:${context}`);
  return { $sealed: 1, kids, iv, ct };
}

/** The sealed value, given every key it names; throws when it does not authenticate. */
export function openValue(sealed: SealedValue, keys: ReadonlyMap<string, Uint8Array>, context: string): unknown {
  return JSON.parse(decrypt(sealed.iv, sealed.ct, derivedKey([...sealed.kids].sort(), keys, context), `eskit:sealed:${context}`));
}

/**
 * A key as a key store reads it from its driver: a copy handed out, the driver's buffer zeroed (the
 * copy is the caller's to keep or wipe; the driver's would otherwise linger until collected).
 */
export function keyFromDriver(kid: string, stored: Uint8Array): { kid: string; key: Uint8Array } {
  const key = new Uint8Array(stored);
  stored.fill(0);
  return { kid, key };
}

/** A fresh random data key. */
export function newDataKey(): Uint8Array {
  return new Uint8Array(randomBytes(32));
}

function fieldContext(eventId: string, path: string): string {
  return `eskit:field:${eventId}:${path}`;
}

/** One key from several: all of them are needed to derive it, so destroying any one erases the value. */
function derivedKey(kids: readonly string[], keys: ReadonlyMap<string, Uint8Array>, context: string): Uint8Array {
  if (kids.length === 1) return keys.get(kids[0] as string) as Uint8Array;
  const material = Buffer.concat(kids.map((kid) => keys.get(kid) as Uint8Array));
  return new Uint8Array(hkdfSync('sha256', material, Buffer.from(kids.join(',')), Buffer.from(context), 32));
}

function encrypt(plaintext: string, key: Uint8Array, aad: string): { iv: string; ct: string } {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(aad));
  const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final(), cipher.getAuthTag()]);
  return { iv: iv.toString('base64'), ct: body.toString('base64') };
}

function decrypt(ivText: string, ctText: string, key: Uint8Array, aad: string): string {
  const body = Buffer.from(ctText, 'base64');
  if (body.length < TAG_BYTES) throw new Error('the ciphertext is shorter than its tag');
  const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(ivText, 'base64'));
  decipher.setAAD(Buffer.from(aad));
  decipher.setAuthTag(body.subarray(body.length - TAG_BYTES));
  return Buffer.concat([decipher.update(body.subarray(0, body.length - TAG_BYTES)), decipher.final()]).toString('utf8');
}
