/**
 * The fetching image service as `serve` runs it: store, fetcher (address policy, limits),
 * resize engine and the service over them, built from the config in one place. The
 * server and `imageproxy populate` both use it, so a bulk import fetches under exactly
 * the server's policy, limits, single-flight and backoff. The images live in the tree,
 * or with `storage.type: "s3"` in the bucket of the object store the caller gives (one
 * per process: its sockets outlive a reload); the blocklist is the caller's choice too.
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
import { treeBackend, type ImageBackend } from '../storage/imageBackend.js';
import { createS3Backend } from '../storage/s3Backend.js';
import { parseImageObjectName } from '../storage/objectNames.js';
import type { ObjectStore } from '../storage/objectStore.js';
import { watchBlocklist, type BlocklistWatcher } from '../takedown/blocklistStore.js';
import { watchBucketBlocklist } from '../takedown/bucketBlocklist.js';

export interface ImageServiceParts {
  service: ImageService;
  /** The node's tree under `root` (with `storage.type: "s3"`, only its locks and state). */
  store: ImageStore;
  /** Where the images are: the tree, or the bucket. */
  backend: ImageBackend;
  fetcher: Fetcher;
  /** The resize engine the service uses (readiness probes it). */
  engine: ResizeEngine;
  /** Closes the fetcher's connections and the engine's workers. */
  close(): Promise<void>;
}

export interface ImageServiceOptions {
  metrics?: Metrics;
  now?: () => number;
  /** The bucket's store; required with `storage.type: "s3"`. */
  objects?: ObjectStore;
  /** The takedown blocklist for this config; default: the storage's (blocklistOf). */
  blocklist?: BlocklistWatcher;
}

/** `original` or `thumbnail`, for the damaged-file metric. */
export function damagedKind(relativePath: string): 'original' | 'thumbnail' {
  return classifyTreeFile(relativePath.slice(relativePath.lastIndexOf('/') + 1)) === 'thumbnail' ? 'thumbnail' : 'original';
}

/**
 * The takedown blocklist of the config's storage, watched: the tree's file under `root`,
 * or with a bucket (`objects`) its object, which every node watches, so a block made
 * through any node holds on all of them.
 */
export function blocklistOf(config: Config, logger: Logger, objects: ObjectStore | undefined): BlocklistWatcher {
  return objects === undefined ? watchBlocklist(resolve(config.root), { extraHosts: config.blockedHosts }) : watchBucketBlocklist(objects, { extraHosts: config.blockedHosts, logger });
}

export async function createImageServiceFor(
  config: Config,
  logger: Logger,
  options: ImageServiceOptions = {},
): Promise<ImageServiceParts> {
  const onDamaged = (event: { relativePath: string }, kind: 'original' | 'thumbnail', message: string): void => {
    logger.warn(event, message);
    options.metrics?.damagedFiles.inc({ found_by: 'lookup', kind });
  };
  const store = new ImageStore(resolve(config.root), {
    onDamaged: (event) => onDamaged(event, damagedKind(event.relativePath), 'damaged stored file moved aside; it will be fetched or made again'),
  });
  let backend: ImageBackend;
  if (config.storage.type === 's3') {
    if (options.objects === undefined) throw new Error('storage.type s3: the image service needs the bucket\'s object store');
    backend = createS3Backend(options.objects, {
      locks: store,
      onDamaged: (event) =>
        onDamaged(event, (parseImageObjectName(event.relativePath)?.label ?? null) === null ? 'original' : 'thumbnail', 'damaged object removed; it will be fetched or made again'),
      ...(options.now === undefined ? {} : { now: options.now }),
    });
  } else {
    backend = treeBackend(store);
  }
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
    store: backend,
    fetcher,
    engine,
    logger,
    blocklist: options.blocklist ?? blocklistOf(config, logger, options.objects),
    ...(options.metrics === undefined ? {} : { metrics: options.metrics }),
    ...(options.now === undefined ? {} : { now: options.now }),
  });
  return {
    service,
    store,
    backend,
    fetcher,
    engine,
    async close() {
      fetcher.close();
      await service.close();
    },
  };
}
