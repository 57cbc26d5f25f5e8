// Migration 13's table, next to the key store that reads it (postgres-subject-key-store.ts).

/** The data keys of personal data: `<schema>.subject_keys`. */
export function subjectKeysTableSql(s: string): string {
  return `
-- The data keys of personal data (postgres-subject-key-store.ts), one live key per subject at most
-- (the partial unique index). forget sets key NULL and forgotten_at on the subject's rows and never
-- deletes one: the row is the fence that refuses new keys, and a destroyed key must never look like
-- one never created. A subject forgotten before it had a key gets a row with no key at all.
CREATE TABLE ${s}.subject_keys (
  kid text NOT NULL,
  subject text NOT NULL,
  key bytea,
  created_at timestamptz NOT NULL,
  forgotten_at timestamptz,
  CONSTRAINT subject_keys_pkey PRIMARY KEY (kid),
  CONSTRAINT subject_keys_key_check CHECK ((key IS NULL) = (forgotten_at IS NOT NULL))
);
CREATE UNIQUE INDEX subject_keys_live ON ${s}.subject_keys (subject) WHERE forgotten_at IS NULL;
CREATE INDEX subject_keys_subject ON ${s}.subject_keys (subject);
`;
}
