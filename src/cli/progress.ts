import type { CliOutput } from './io.js';

/**
 * A rebuild's progress: on a terminal one line redrawn in place (carriage return, at most every
 * 100 ms); elsewhere (a log, a pipe) one line per 10 % step, so that logs stay short.
 */
export class ProgressBar {
  readonly #out: CliOutput;
  readonly #label: string;
  readonly #tty: boolean;
  #lastStep = -1;
  #lastDraw = 0;
  #drawn = false;

  constructor(out: CliOutput, label: string) {
    this.#out = out;
    this.#label = label;
    this.#tty = out.isTTY === true;
  }

  update(done: number, total: number, force = false): void {
    const fraction = total <= 0 ? 1 : Math.min(1, done / total);
    const percent = Math.floor(fraction * 100);
    if (this.#tty) {
      const now = performance.now();
      if (!force && this.#drawn && now - this.#lastDraw < 100) return;
      this.#lastDraw = now;
      this.#drawn = true;
      const width = 30;
      const filled = Math.round(fraction * width);
      this.#out.write(`\r${this.#label} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${String(percent).padStart(3)}% ${done}/${total} events\u001b[K`);
      return;
    }
    const step = Math.floor(percent / 10);
    if (step <= this.#lastStep) return;
    this.#lastStep = step;
    this.#out.write(`${this.#label}: ${step * 10}% (${done}/${total} events)\n`);
  }

  /** Draws the final state and ends the line. */
  finish(done: number, total: number): void {
    this.update(done, total, true);
    if (this.#tty && this.#drawn) this.#out.write('\n');
  }

  /** Ends a redrawn line early (an error follows). */
  abandon(): void {
    if (this.#tty && this.#drawn) this.#out.write('\n');
  }
}
