// The ticket shop's config for the `eskit` CLI: the event registry and the views, built exactly as the
// demo builds them (same name, setup and evolve), so `eskit view rebuild sales` rebuilds the real thing.
//
//   npm run -s eskit -- view rebuild sales --config examples/eskit.config.ts --db sqlite:data/demo.db
import { defineConfig } from '../src/cli/index.js';
import { registry } from './ticket-shop/domain.js';
import type { ConcertEvent } from './ticket-shop/domain.js';
import { salesView } from './ticket-shop/views.js';

export default defineConfig<ConcertEvent>({
  registry,
  views: (context) => [salesView(context, { logger: context.logger })],
});
