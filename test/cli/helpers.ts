// Runs the CLI in-process (`run(argv, io)`) with captured output.
import { run } from '../../src/cli/run.js';
import type { CliOutput } from '../../src/cli/run.js';

export interface Capture extends CliOutput {
  text: string;
}

export function capture(isTTY = false): Capture {
  const output = {
    text: '',
    isTTY,
    write(chunk: string) {
      output.text += chunk;
      return true;
    },
  };
  return output;
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  env?: Record<string, string | undefined>;
  cwd?: string;
  signal?: AbortSignal;
  tty?: boolean;
  /** Receives the live captures, e.g. to wait for lines of a command that runs until aborted. */
  onStart?: (stdout: Capture, stderr: Capture) => void;
}

export async function cli(args: readonly string[], options: CliOptions = {}): Promise<CliResult> {
  const stdout = capture(options.tty);
  const stderr = capture(options.tty);
  options.onStart?.(stdout, stderr);
  const code = await run(args, { stdout, stderr, env: options.env ?? {}, cwd: options.cwd, signal: options.signal });
  return { code, stdout: stdout.text, stderr: stderr.text };
}

/** Parses a CLI's JSON output, failing with the whole output when it is not JSON. */
export function parseJson<T>(result: CliResult): T {
  try {
    return JSON.parse(result.stdout) as T;
  } catch {
    throw new Error(`not JSON (exit ${result.code}):\n${result.stdout}\n${result.stderr}`);
  }
}
