// The better-sqlite3 driver, loaded here and only here. It is an optional peer dependency: an
// application that uses PostgreSQL does not install it (nor compile it), and importing `eskit/sqlite`
// without it must say what to install rather than fail with Node's ERR_MODULE_NOT_FOUND. A static
// `import Database from 'better-sqlite3'` would fail before any of our code ran, hence `createRequire`.
import { createRequire } from 'node:module';
import type BetterSqlite3 from 'better-sqlite3';
import { MissingDriverError } from '../core/errors.js';
import type { EventShape } from '../core/event.js';
import type { SqliteEventStore } from './sqlite-event-store.js';

/** The versions eskit supports: better-sqlite3 13 crashes on Node 20. Keep in step with peerDependencies. */
const SUPPORTED = 'better-sqlite3@12';

function load(): typeof BetterSqlite3 {
  const require = createRequire(import.meta.url);
  try {
    require.resolve('better-sqlite3');
  } catch (cause) {
    throw new MissingDriverError('better-sqlite3', 'eskit/sqlite', SUPPORTED, { cause });
  }
  // Resolved, so a failure now is the driver's own (a broken build): let it through as it is.
  return require('better-sqlite3') as typeof BetterSqlite3;
}

/**
 * The driver's constructor, and (as with `import Database from 'better-sqlite3'`) a namespace of its
 * types, so that modules import it as `import Database from './driver.js'` and write
 * `Database.Database` and `new Database(path)` as before.
 */
const Database: typeof BetterSqlite3 = load();
// eslint-disable-next-line @typescript-eslint/no-namespace -- a types-only namespace merged with the value, as the driver's own typings do
declare namespace Database {
  export type Database = BetterSqlite3.Database;
  export type Options = BetterSqlite3.Options;
  export type SqliteError = BetterSqlite3.SqliteError;
  export type RunResult = BetterSqlite3.RunResult;
}
export default Database;

// The CLI config's context for SQLite (see EskitConfigBackends). Declared here because every
// declaration of eskit/sqlite reaches this module, and eskit/cli must not import the adapter itself.
declare module '../cli/config.js' {
  interface EskitConfigBackends<E extends EventShape> {
    sqlite: { store: SqliteEventStore<E> };
  }
}
