import { ExitCode } from '../errors.js';
import type { CommandSpec } from '../command.js';
import { flag } from '../command.js';
import { json } from '../format.js';

export const migrate: CommandSpec = {
  name: 'migrate',
  summary: "create or upgrade eskit's tables",
  help: `Usage: eskit migrate [--db <url>] [--schema <name>] [--json]

Creates eskit's tables, or brings them up to this version of eskit. Idempotent, and safe while
services run (each step runs in its own transaction under a lock, and steps only add).

  SQLite      creates the file if it does not exist (its directory must).
  PostgreSQL  creates the schema (--schema, default eskit) if it does not exist.

Views create their own tables when they first start or rebuild; migrate does not touch them.

Options:
  --json   print {"applied": [...], "version": n}
`,
  options: { json: { type: 'boolean' } },
  positionals: { min: 0, max: 0, names: '' },
  async run(context) {
    const db = await context.open({ create: true, requireMigrated: false });
    const before = db.schema.version;
    const { applied, version } = await db.admin.migrate();
    if (flag(context.values, 'json')) {
      context.out(json({ database: db.target.display, applied, version }));
    } else if (applied.length === 0) {
      context.out(`${db.target.display} is up to date (schema version ${version}).\n`);
    } else {
      context.out(`${db.target.display}: applied migration${applied.length === 1 ? '' : 's'} ${applied.join(', ')} (schema version ${before} -> ${version}).\n`);
    }
    return ExitCode.Ok;
  },
};
