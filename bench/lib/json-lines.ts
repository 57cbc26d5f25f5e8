import type { Readable } from 'node:stream';

/**
 * Calls `onLine` with each JSON line a child process prints on `stream`, and `onOther` with any line
 * that is not JSON (kept for the failure message), then `after` once per chunk read.
 */
export function readJsonLines(stream: Readable, onLine: (line: Record<string, unknown>) => void, onOther: (text: string) => void, after: () => void): void {
  stream.setEncoding('utf8');
  let pending = '';
  stream.on('data', (chunk: string) => {
    pending += chunk;
    for (let newline = pending.indexOf('\n'); newline >= 0; newline = pending.indexOf('\n')) {
      const text = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      try {
        onLine(JSON.parse(text) as Record<string, unknown>);
      } catch {
        onOther(text);
      }
    }
    after();
  });
}
