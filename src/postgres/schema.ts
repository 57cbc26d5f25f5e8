import { InvalidArgumentError } from '../core/errors.js';

export const DEFAULT_SCHEMA = 'eskit';

// Lower case only, so the name means the same quoted or not and never needs escaping in SQL text.
const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;

/** Checks a schema name and returns it quoted for SQL text. */
export function quoteSchema(schema: unknown): string {
  if (typeof schema !== 'string' || !IDENTIFIER.test(schema)) {
    throw new InvalidArgumentError(
      `schema must be a lower-case SQL identifier (a-z, 0-9, _; not starting with a digit; at most 63 characters), got ${JSON.stringify(schema) ?? String(schema)}`,
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

function fnv1a32(text: string): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(text, 'utf8')) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193);
  }
  return hash | 0;
}
