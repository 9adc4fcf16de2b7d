/**
 * Starts the service: store, fetcher, resize engine, image service and Express app on
 * one listening socket, plus the periodic removal of temp files left by crashes. Used by
 * `imageproxy serve` and by tests that need the whole server in-process.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { splitListen, type Config } from '../config.js';
import { createImageServiceFor } from '../imageServiceFactory.js';
import type { Logger } from '../log.js';
import { createMetrics } from '../metrics.js';
import type { ImageStore } from '../store.js';
import { startTreeStatsRefresh } from '../treeStatsRefresh.js';
import { createApp } from './app.js';

export interface RunningServer {
  /** `http://host:port`, with the port actually bound. */
  url: string;
  server: Server;
  store: ImageStore;
  close(): Promise<void>;
}

export interface StartOptions {
  config: Config;
  secrets: readonly string[];
  logger: Logger;
  now?: () => number;
}

// Temp files only outlive a crash, and a crashed process sweeps when it starts again;
// the daily pass catches the rest without listing a tree of millions of files hourly.
const TEMP_SWEEP_INTERVAL_MS = 86_400_000;

export async function startServer(options: StartOptions): Promise<RunningServer> {
  const { config, logger } = options;
  const metrics = createMetrics({ processMetrics: true });
  const clock = options.now ? { now: options.now } : {};
  const imageService = await createImageServiceFor(config, logger, { metrics, ...clock });
  const { store, service: images } = imageService;
  const app = createApp({ config, secrets: options.secrets, images, logger, metrics, ...clock });

  const { host, port } = splitListen(config.listen);
  const server = app.listen(port, host);
  // nginx keeps idle upstream connections for 60 s (keepalive_timeout of the upstream
  // block); if Node closed them first (its default is 5 s), nginx could send a miss on a
  // socket being closed and answer 502. Stay open longer than nginx does.
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  await new Promise<void>((done, fail) => {
    server.once('listening', done);
    server.once('error', fail);
  });
  const address = server.address() as AddressInfo;
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;

  const sweepTempFiles = async (): Promise<void> => {
    for (const bucket of Object.keys(config.buckets)) {
      const removed = await store.removeStaleTempFiles(bucket, config.tempMaxAgeSeconds * 1000, Date.now());
      if (removed > 0) logger.info({ bucket, removed }, 'removed stale temp files');
    }
  };
  const runSweep = (): void => {
    sweepTempFiles().catch((error: unknown) => logger.error({ err: error }, 'temp file sweep failed'));
  };
  runSweep();
  const sweepTimer = setInterval(runSweep, TEMP_SWEEP_INTERVAL_MS);
  sweepTimer.unref();
  const treeStats = startTreeStatsRefresh({
    root: store.root,
    buckets: Object.keys(config.buckets),
    intervalSeconds: config.statsRefreshSeconds,
    gauges: metrics.tree,
    logger,
  });

  return {
    url: `http://${shownHost}:${address.port}`,
    server,
    store,
    async close() {
      clearInterval(sweepTimer);
      await treeStats.stop();
      // Let requests in flight finish; cut what still hangs after a grace period.
      const force = setTimeout(() => server.closeAllConnections(), 5000);
      await new Promise<void>((done) => {
        server.close(() => done());
        server.closeIdleConnections();
      });
      clearTimeout(force);
      await imageService.close();
    },
  };
}
