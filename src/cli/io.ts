/** Where the CLI writes: process.stdout / process.stderr, or a capture in tests. */
export interface CliOutput {
  write(chunk: string): unknown;
  /** A terminal: progress bars redraw one line. */
  readonly isTTY?: boolean;
}

/** Everything `run` touches outside itself, so that it can run in-process in tests. */
export interface CliIO {
  stdout: CliOutput;
  stderr: CliOutput;
  /** Environment variables (`DATABASE_URL`). */
  env: Readonly<Record<string, string | undefined>>;
  /** Where relative paths (`sqlite:data/app.db`, `--config`) start. Default `process.cwd()`. */
  cwd?: string;
  /** Stops long-running commands (`events tail`, `view rebuild`): SIGINT in the real CLI. */
  signal?: AbortSignal;
}
