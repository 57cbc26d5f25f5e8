// A TCP proxy in front of PostgreSQL that a test can turn into a black hole: connections stay open and
// accepted, but nothing is forwarded any more, in either direction (a cut network, a frozen server).
// Nothing errors, so only a timeout of eskit's own can end a call made through it.
import { createConnection, createServer } from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { POSTGRES_URL } from './postgres.js';

export interface BlackHoleProxy {
  /** A connection string for the test database through the proxy. */
  connectionString: string;
  /** From now on nothing is forwarded, and new connections are accepted and left unanswered. */
  blackHole(): void;
  close(): Promise<void>;
}

export async function blackHoleProxy(): Promise<BlackHoleProxy> {
  const target = new URL(POSTGRES_URL);
  const sockets = new Set<Socket>();
  let holed = false;
  const server = createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => undefined);
    if (holed) {
      client.pause();
      return;
    }
    const upstream = createConnection({ host: target.hostname, port: Number(target.port || 5432) });
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.on('data', (chunk) => {
      if (!holed) upstream.write(chunk);
    });
    upstream.on('data', (chunk) => {
      if (!holed) client.write(chunk);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const url = new URL(POSTGRES_URL);
  url.hostname = '127.0.0.1';
  url.port = String(port);
  return {
    connectionString: url.toString(),
    blackHole() {
      holed = true;
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
