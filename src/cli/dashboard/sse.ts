// The live connections (GET /api/live): one per page, each sent what every sample produced. Pages
// never cause a query by being connected; the sample is made once and written to all of them.
import type { ServerResponse } from 'node:http';

/** A page that has not read this much of what it was sent is cut off (it reconnects and starts afresh). */
const MAX_BUFFERED = 4 * 1024 * 1024;
const HEARTBEAT_MS = 15_000;

export type LiveEvent = readonly [event: 'state' | 'events' | 'actions', data: unknown];

function frame(event: string, data: unknown): string {
  // JSON has no raw newlines, so the data is one `data:` line.
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

export class LiveHub {
  readonly #clients = new Set<ServerResponse>();
  readonly #heartbeat: NodeJS.Timeout;
  constructor() {
    this.#heartbeat = setInterval(() => this.#write(': ping\n\n'), HEARTBEAT_MS);
    this.#heartbeat.unref();
  }

  get size(): number {
    return this.#clients.size;
  }

  /** Takes over the response: headers, the retry delay, then `initial`; then whatever is broadcast. */
  connect(res: ServerResponse, initial: readonly LiveEvent[]): void {
    res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
    res.write(`retry: 2000\n\n${initial.map(([event, data]) => frame(event, data)).join('')}`);
    this.#clients.add(res);
    const drop = (): void => void this.#clients.delete(res);
    // The response closes when the page goes away (or close() ends it).
    res.on('close', drop);
    res.on('error', drop);
  }

  broadcast(event: LiveEvent[0], data: unknown): void {
    if (this.#clients.size === 0) return;
    this.#write(frame(event, data));
  }

  #write(text: string): void {
    // Encoded once: a string written to each response would be encoded again for each (a frame of
    // events can be megabytes, and a page is one response each).
    const chunk = Buffer.from(text, 'utf8');
    for (const res of this.#clients) {
      if (res.writableLength > MAX_BUFFERED) {
        this.#clients.delete(res);
        res.destroy();
        continue;
      }
      res.write(chunk);
    }
  }

  /** Ends every live connection. */
  close(): void {
    clearInterval(this.#heartbeat);
    for (const res of this.#clients) res.end();
    this.#clients.clear();
  }
}
