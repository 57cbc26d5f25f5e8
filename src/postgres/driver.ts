// The `pg` driver, loaded here and only here. It is an optional peer dependency: an application that
// uses SQLite does not install it, and importing `eskit/postgres` without it must say what to install
// rather than fail with Node's ERR_MODULE_NOT_FOUND. A static `import pg from 'pg'` would fail before
// any of our code ran, hence `createRequire` (pg is CommonJS either way).
import { createRequire } from 'node:module';
import type * as Pg from 'pg';
import { MissingDriverError } from '../core/errors.js';
import type { EventShape } from '../core/event.js';
import type { PostgresEventStore } from './postgres-event-store.js';

function load(): typeof Pg {
  const require = createRequire(import.meta.url);
  try {
    require.resolve('pg');
  } catch (cause) {
    throw new MissingDriverError('pg', 'eskit/postgres', 'pg', { cause });
  }
  // Resolved, so a failure now is pg's own (a broken install): let it through as it is.
  return require('pg') as typeof Pg;
}

const pg: typeof Pg = load();

// Modules import this one as `import * as pg from './driver.js'` and use `pg.Pool` as type and value,
// as with `import pg from 'pg'`. Every type of pg is re-exported; values are added as needed.
export type * from 'pg';
export const Pool: typeof Pg.Pool = pg.Pool;
export type Pool = Pg.Pool;
export const Client: typeof Pg.Client = pg.Client;
export type Client = Pg.Client;
export const DatabaseError: typeof Pg.DatabaseError = pg.DatabaseError;
export type DatabaseError = Pg.DatabaseError;

// The CLI config's context for PostgreSQL (see EskitConfigBackends). Declared here because every
// declaration of eskit/postgres reaches this module, and eskit/cli must not import the adapter itself.
declare module '../cli/config.js' {
  interface EskitConfigBackends<E extends EventShape> {
    postgres: { store: PostgresEventStore<E>; schema: string };
  }
}
