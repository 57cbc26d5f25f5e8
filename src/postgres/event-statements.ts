// The SQL of PostgresEventStore, per schema: named statements (parsed once per connection) for the
// appends and reads, unnamed ones where each call must be planned for its own values.
import type * as pg from './driver.js';
import { appendOneStatements } from './append-functions.js';
import { quoteSchema } from './schema.js';

export interface Statements {
  lock: { name: string; text: string };
  insertOne: { name: string; text: string };
  appendGroup: pg.QueryArrayConfig;
  append: pg.QueryArrayConfig;
  readForward: pg.QueryArrayConfig;
  readBackward: pg.QueryArrayConfig;
  readArchived: pg.QueryArrayConfig;
  readAll: pg.QueryArrayConfig;
  readAllTypes: pg.QueryArrayConfig;
  readCategory: pg.QueryArrayConfig;
  readCategoryTypes: pg.QueryArrayConfig;
  streamVersion: pg.QueryArrayConfig;
  head: pg.QueryArrayConfig;
}

const COLUMNS = 'position, id, stream_id, stream_version, type, data::text, metadata::text, created_at';
/** A stream's category, exactly as the index of migration 10 computes it (the planner matches the expression). */
export const CATEGORY_SQL = "split_part(stream_id, '-', 1)";

export function eventStatements(schema: string): Statements {
  const s = quoteSchema(schema);
  // Named statements are parsed once per connection. The schema is in the name: one pool may serve stores of several schemas.
  const name = (what: string): string => `eskit.${schema}.${what}`;
  const array = 'array' as const;
  const one = appendOneStatements(s, schema);
return {
    lock: { name: name('append_lock'), text: one.lock },
    insertOne: { name: name('append_one_insert'), text: one.insert },
    appendGroup: {
      name: name('append_group'),
      rowMode: array,
      text: `SELECT base_position, offsets, versions, (extract(epoch FROM written_at) * 1000)::float8 FROM ${s}.append_group($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
    },
    append: {
      name: name('append'),
      rowMode: array,
      text: `SELECT first_position, last_version, (extract(epoch FROM written_at) * 1000)::float8 FROM ${s}.append($1, $2, $3, $4, $5, $6)`,
    },
    readForward: {
      name: name('read_forward'),
      rowMode: array,
      text: `SELECT ${COLUMNS} FROM ${s}.events WHERE stream_id = $1 AND stream_version >= $2 ORDER BY stream_version LIMIT $3`,
    },
    readArchived: {
      name: name('read_archived'),
      rowMode: array,
      text: `SELECT ${COLUMNS} FROM ${s}.archived_events WHERE stream_id = $1 AND stream_version >= $2 ORDER BY stream_version LIMIT $3`,
    },
    readBackward: {
      name: name('read_backward'),
      rowMode: array,
      text: `SELECT ${COLUMNS} FROM ${s}.events WHERE stream_id = $1 AND stream_version <= $2 AND stream_version > 0 ORDER BY stream_version DESC LIMIT $3`,
    },
    readAll: { name: name('read_all'), rowMode: array, text: `SELECT ${COLUMNS} FROM ${s}.events WHERE position > $1 ORDER BY position LIMIT $2` },
    readAllTypes: {
      name: name('read_all_types'),
      rowMode: array,
      text: `SELECT ${COLUMNS} FROM ${s}.events WHERE position > $1 AND type = ANY($3::text[]) ORDER BY position LIMIT $2`,
    },
    // Unnamed, so planned for the category asked each time: a generic plan cannot tell a category of
    // 1% of the log (walk the category index) from one of half of it (walk positions and filter), and
    // would pick one way for all (a forced generic plan took the position walk: the whole log read for 1% of it).
    readCategory: {
      rowMode: array,
      text: `SELECT ${COLUMNS} FROM ${s}.events WHERE ${CATEGORY_SQL} = $3 AND position > $1 ORDER BY position LIMIT $2`,
    },
    readCategoryTypes: {
      rowMode: array,
      text: `SELECT ${COLUMNS} FROM ${s}.events WHERE ${CATEGORY_SQL} = $3 AND position > $1 AND type = ANY($4::text[]) ORDER BY position LIMIT $2`,
    },
    streamVersion: {
      name: name('stream_version'),
      rowMode: array,
      text: `SELECT stream_version FROM ${s}.events WHERE stream_id = $1 AND stream_version > 0 ORDER BY stream_version DESC LIMIT 1`,
    },
    head: { name: name('head'), rowMode: array, text: `SELECT coalesce(max(position), 0) FROM ${s}.events` },
  };
}
