/**
 * The fetching image service as `serve` runs it: store, fetcher (address policy, limits),
 * resize engine and the service over them, built from the config in one place. The
 * server and `imageproxy populate` both use it, so a bulk import fetches under exactly
 * the server's policy, limits, single-flight and backoff.
 */
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import type { Config } from '../config/config.js';
import type { ResizeEngine } from '../images/engine.js';
import { createEngine } from '../images/engineChoice.js';
import { createFetcher, type Fetcher } from '../fetch/fetcher.js';
import { createFetchingImageService } from './fetchingImages.js';
import type { ImageService } from './imageService.js';
import { classifyTreeFile } from '../contract/layout.js';
import type { Logger } from '../observe/log.js';
import type { Metrics } from '../observe/metrics.js';
import { ImageStore } from '../tree/store.js';

export interface ImageServiceParts {
  service: ImageService;
  store: ImageStore;
  fetcher: Fetcher;
  /** The resize engine the service uses (readiness probes it). */
  engine: ResizeEngine;
  /** Closes the fetcher's connections and the engine's workers. */
  close(): Promise<void>;
}

export interface ImageServiceOptions {
  metrics?: Metrics;
  now?: () => number;
}

/** `original` or `thumbnail`, for the damaged-file metric. */
export function damagedKind(relativePath: string): 'original' | 'thumbnail' {
  return classifyTreeFile(relativePath.slice(relativePath.lastIndexOf('/') + 1)) === 'thumbnail' ? 'thumbnail' : 'original';
}

export async function createImageServiceFor(
  config: Config,
  logger: Logger,
  options: ImageServiceOptions = {},
): Promise<ImageServiceParts> {
  const store = new ImageStore(resolve(config.root), {
    onDamaged: (event) => {
      logger.warn(event, 'damaged stored file moved aside; it will be fetched or made again');
      options.metrics?.damagedFiles.inc({ found_by: 'lookup', kind: damagedKind(event.relativePath) });
    },
  });
  const fetcher = createFetcher({
    limits: config.limits,
    allowPrivateNetworks: config.allowPrivateNetworks,
    allowedAddresses: config.allowedAddresses,
    userAgent: config.userAgent,
  });
  const engine = await createEngine(config.engine, {
    maxPixels: config.limits.maxPixels,
    timeoutSeconds: Math.ceil(config.limits.totalTimeoutMs / 1000),
    // Leave a core for the event loop and nginx on small machines.
    concurrency: Math.max(1, availableParallelism() - 1),
    quality: config.quality,
    mozjpeg: config.mozjpeg,
  });
  const service = createFetchingImageService({
    config,
    store,
    fetcher,
    engine,
    logger,
    ...(options.metrics === undefined ? {} : { metrics: options.metrics }),
    ...(options.now === undefined ? {} : { now: options.now }),
  });
  return {
    service,
    store,
    fetcher,
    engine,
    async close() {
      fetcher.close();
      await service.close();
    },
  };
}
