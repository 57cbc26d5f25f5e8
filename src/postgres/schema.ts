import { createHash } from 'node:crypto';
import { InvalidArgumentError } from '../core/errors.js';

export const DEFAULT_SCHEMA = 'eskit';

// Lower case only, so the name means the same quoted or not and never needs escaping in SQL text.
const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * Schemas eskit must not create its tables in. information_schema and pg_* belong to PostgreSQL
 * (pg_temp is even a different, per-session schema for each connection). public is where applications
 * keep their own tables: eskit's have common names (events, migrations, checkpoints) that would mix
 * with theirs, and a reset that drops eskit's schema would drop the application's tables with it.
 */
function reservedBecause(schema: string): string | undefined {
  if (schema === 'information_schema' || schema.startsWith('pg_')) return 'PostgreSQL reserves it for its own catalogs';
  if (schema === 'public') return "it holds your application's own tables, which eskit's (events, migrations, checkpoints, ...) would mix with";
  return undefined;
}

/** Checks a schema name and returns it quoted for SQL text. */
export function quoteSchema(schema: unknown): string {
  if (typeof schema !== 'string' || !IDENTIFIER.test(schema)) {
    throw new InvalidArgumentError(
      `schema must be a lower-case SQL identifier (a-z, 0-9, _; not starting with a digit; at most 63 characters), got ${JSON.stringify(schema) ?? String(schema)}`,
    );
  }
  const reserved = reservedBecause(schema);
  if (reserved) {
    throw new InvalidArgumentError(
      `eskit cannot use the schema "${schema}": ${reserved}. Give eskit a schema of its own (the default is "${DEFAULT_SCHEMA}").`,
    );
  }
  return `"${schema}"`;
}

/** What an advisory lock of eskit protects; each gets its own key per schema. */
export type AdvisoryPurpose = 'migrate' | 'append';

/**
 * The two-int advisory lock key for `purpose` in `schema`. eskit uses only the two-int form, whose
 * key space is separate from the single-bigint form that applications (and lease locks) usually use.
 * FNV-1a is computed here rather than with PostgreSQL's internal `hashtext`, so the key cannot change
 * with a server upgrade while an old process still appends with the old one.
 */
export function advisoryKey(purpose: AdvisoryPurpose, schema: string): [number, number] {
  return [fnv1a32(`eskit.${purpose}`), fnv1a32(schema)];
}

/**
 * The two-int advisory lock key that serialises creating, forgetting and allowing the keys of one
 * subject in `schema` (postgres-subject-key-store.ts), in the two-int key space of `advisoryKey` under
 * a purpose of its own. Subjects whose hashes collide share a key: they only wait on each other.
 */
export function subjectLockKey(schema: string, subject: string): [number, number] {
  return [fnv1a32('eskit.subject'), fnv1a32(`${schema}\u0000${subject}`)];
}

function fnv1a32(text: string): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(text, 'utf8')) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193);
  }
  return hash | 0;
}

/**
 * What a NOTIFY channel of eskit announces; each gets its own channel per schema. 'members': a member
 * of a group joined or left (the payload is the group), see postgres-member-registry.ts. 'views': a SQL
 * view committed (the payload names the view, the lane and the positions, never row data), see postgres-view.ts.
 * 'subjects': subjects were forgotten (the payload is the destroyed key ids, comma-separated), see
 * postgres-subject-key-store.ts.
 */
export type ChannelPurpose = 'appended' | 'released' | 'members' | 'views' | 'subjects';

// PostgreSQL truncates identifiers (and refuses channel names) beyond 63 bytes.
const MAX_IDENTIFIER_BYTES = 63;

/**
 * The NOTIFY channel for `purpose` in `schema`: `eskit_<purpose>_<schema>`, or, when that would not fit
 * in an identifier, the schema replaced by its hash. Schema names are lower-case identifiers, so the
 * channel never needs escaping.
 */
export function notifyChannel(purpose: ChannelPurpose, schema: string): string {
  quoteSchema(schema);
  const readable = `eskit_${purpose}_${schema}`;
  if (readable.length <= MAX_IDENTIFIER_BYTES) return readable;
  return `eskit_${purpose}_${(fnv1a32(schema) >>> 0).toString(16).padStart(8, '0')}`;
}

/**
 * The advisory lock key of a lease lock: the first 8 bytes of SHA-256 over schema and name, as a signed
 * bigint (in decimal text, as pg sends a bigint). Leases use the single-bigint form of advisory locks,
 * whose key space is separate from the two-int form of `advisoryKey`, so they can never collide with
 * eskit's own append and migration locks. The schema is part of the key so that tenants in separate
 * schemas never wait on each other's locks.
 */
export function lockKey(name: string, schema: string = DEFAULT_SCHEMA): string {
  return createHash('sha256').update(`${schema}\u0000${name}`, 'utf8').digest().readBigInt64BE(0).toString();
}
