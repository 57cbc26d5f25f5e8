// The live summary. On a terminal: a block of status lines redrawn in place, with messages scrolling
// above it. Piped (CI logs, a file): a status line per quarter of the orders, and the messages.

export interface DisplayOptions {
  /** Redraw in place (a terminal) or print a line per quarter. */
  tty: boolean;
  /** The status block, computed on every redraw. */
  render: () => string[];
  /** 0..1, for the quarter lines when piped. */
  progress: () => number;
  write?: (text: string) => void;
}

export class LiveDisplay {
  readonly #options: DisplayOptions;
  readonly #write: (text: string) => void;
  #drawn = 0;
  #quarter = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(options: DisplayOptions) {
    this.#options = options;
    this.#write = options.write ?? ((text) => void process.stdout.write(text));
  }

  start(): void {
    if (this.#options.tty) {
      this.redraw();
      this.#timer = setInterval(() => this.redraw(), 100);
    } else {
      this.#timer = setInterval(() => this.#quarterLine(), 100);
    }
  }

  /** A line that stays (printed above the live block). */
  log(line: string): void {
    if (this.#options.tty) {
      this.#clear();
      this.#write(`${line}\n`);
      this.redraw();
    } else {
      this.#write(`${line}\n`);
    }
  }

  redraw(): void {
    if (!this.#options.tty) return;
    this.#clear();
    const lines = this.#options.render();
    this.#write(lines.map((line) => `${line}\n`).join(''));
    this.#drawn = lines.length;
  }

  /** Draws the final state once more and leaves it on screen. */
  stop(): void {
    clearInterval(this.#timer);
    if (this.#options.tty) this.redraw();
    else this.#quarterLine(true);
    this.#drawn = 0;
  }

  #quarterLine(final = false): void {
    const quarter = Math.min(4, Math.floor(this.#options.progress() * 4));
    if (quarter <= this.#quarter && !(final && this.#quarter < 5)) return;
    this.#quarter = final ? 5 : quarter;
    this.#write(`${this.#options.render().map((line) => line.trim().replace(/\s+/g, ' ')).join(' | ')}\n`);
  }

  #clear(): void {
    // Up one line and erase it, for each line of the previous block.
    if (this.#drawn > 0) this.#write('\x1b[1A\x1b[2K'.repeat(this.#drawn) + '\r');
    this.#drawn = 0;
  }
}

export function bar(fraction: number, width = 24): string {
  const filled = Math.max(0, Math.min(width, Math.round(fraction * width)));
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
}
