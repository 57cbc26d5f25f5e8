// `eskit/cli`: what an application writes for the `eskit` command line tool, its config file. A
// subpath of its own because the config names the SQLite and PostgreSQL stores, whose types the main
// entry point does not pull in.
export * from './config.js';
// The dashboard for a program (`eskit dashboard` is the command): its options and handle only, which
// name no adapter (the API's payload types are in src/cli/dashboard/types.ts).
export { openDashboard } from './dashboard/open.js';
export type { OpenDashboardOptions } from './dashboard/open.js';
export type { ActionLogEntry, DashboardSettings, RunningDashboard } from './dashboard/options.js';
