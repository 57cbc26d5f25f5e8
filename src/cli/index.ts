// `eskit/cli`: what an application writes for the `eskit` command line tool, its config file. A
// subpath of its own because the config names the SQLite and PostgreSQL stores, whose types the main
// entry point does not pull in.
export * from './config.js';
