// One process does everything: shoppers place orders, the sales view and the mailer follow the log.
import { openBackend } from './backend.js';
import type { DemoConfig } from './backend.js';
import { LiveDisplay } from './display.js';
import { lastBoughtPosition, ProgressReader, statusLines } from './progress.js';
import { startProcessing } from './processing.js';
import { buildReport, readBackInto } from './report.js';
import type { ReadBack, Report } from './report.js';
import { planOrders, runShop } from './shop.js';
import type { ShopTally } from './shop.js';
import { waitForWork } from './wait.js';

export interface RunOptions {
  orders: number;
  /** `--partitions N`: the mailer runs in N partitions (here all in this process). */
  partitions?: number;
  tty: boolean;
  log: (line: string) => void;
}

export async function runSingle(config: DemoConfig, options: RunOptions): Promise<Report> {
  const backend = await openBackend(config, { reset: true });
  try {
    options.log(`eskit ticket-shop demo on ${backend.label}`);
    options.log(`${options.orders} orders from 8 shoppers; a sales view and a confirmation mailer follow the log.\n`);
    const started = performance.now();
    const processing = await startProcessing(backend, { sentBy: 'demo', partitions: options.partitions });
    const { view, server } = processing;
    const tally: ShopTally = { placed: 0, bought: 0, refunded: 0, soldOut: 0 };
    const reader = new ProgressReader(backend, options.partitions);
    const display = new LiveDisplay({
      tty: options.tty,
      render: () => statusLines(options.orders, tally, reader.current, server.busy),
      progress: () => tally.placed / options.orders,
    });
    const polling = setInterval(() => void reader.read().catch(() => undefined), 100);
    display.start();
    const readBacks: ReadBack[] = [];
    try {
      const shop = runShop({
        store: backend.eskit.store,
        orders: planOrders(options.orders),
        onOrder: (now) => Object.assign(tally, now),
        readBack: readBackInto(backend, view, readBacks),
      });
      Object.assign(tally, await Promise.race([shop, processing.failure]));
      const lastBought = await lastBoughtPosition(backend);
      await waitForWork(reader, lastBought, processing.failure);
      await processing.stop();
    } finally {
      clearInterval(polling);
      await reader.read().catch(() => undefined);
      display.stop();
      await processing.stop();
    }
    return await buildReport({
      backend,
      view,
      workers: 0,
      seconds: (performance.now() - started) / 1000,
      tally,
      readBacks,
      retried: server.busy,
      partitionCount: options.partitions,
    });
  } finally {
    await backend.close();
  }
}
