/**
 * The image service of a running server: stored file if there is one; otherwise fetch
 * the original once (single-flight, backoff after failures), store it, and make the
 * requested variant from it. `/proxy` links pass the bytes through without storing.
 */
import { readFile } from 'node:fs/promises';
import { backoffRemainingSeconds, recordFailure } from './backoff.js';
import { isBlocked, type BlockQuery } from './blocklist.js';
import { watchBlocklist, type BlocklistWatcher } from './blocklistStore.js';
import type { Config } from './config.js';
import type { ResizeEngine, ResizeResult } from './engines/engine.js';
import { ImageproxyError, toImageproxyError, type ErrorCode } from './errors.js';
import type { FetchedImage } from './fetcher.js';
import { variantLabelOf, type ImageAnswer, type ImageRequest, type ImageService } from './imageService.js';
import { fileStem } from './layout.js';
import type { Logger } from './log.js';
import { createMetrics, type Metrics } from './metrics.js';
import { prepareOriginal, sha256Hex, storeOriginal, type OriginalImage } from './originals.js';
import { FORMAT_INFO, formatFromExt } from './sniff.js';
import { InProcessFlights, withFileLock, type FileLockOptions } from './singleFlight.js';
import type { ImageStore, StoredImage } from './store.js';

export interface ImageFetcher {
  fetchImage(url: URL, signal?: AbortSignal): Promise<FetchedImage>;
}

export interface FetchingServiceDependencies {
  config: Config;
  store: ImageStore;
  fetcher: ImageFetcher;
  engine: ResizeEngine;
  logger: Logger;
  metrics?: Metrics;
  now?: () => number;
  /** The takedown blocklist; by default the tree's own file, watched (server/blocklistStore.ts). */
  blocklist?: BlocklistWatcher;
}

/** Failures that say something about the origin or its bytes: retrying soon would fail again. */
const BACKOFF_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'blocked_destination',
  'origin_status',
  'origin_unreachable',
  'origin_timeout',
  'origin_too_large',
  'not_an_image',
  'too_many_pixels',
  'too_many_redirects',
  'bad_image',
]);

export function createFetchingImageService(deps: FetchingServiceDependencies): ImageService {
  const { config, store, fetcher, engine, logger } = deps;
  const now = deps.now ?? Date.now;
  const metrics = deps.metrics ?? createMetrics({ processMetrics: false });
  const flights = new InProcessFlights();
  let queuedResizes = 0;
  const lockOptions: FileLockOptions = {
    waitMs: config.singleFlightWaitMs,
    // A holder refreshes its lock every stale/2; 10 s survives a busy event loop.
    staleMs: 10_000,
    onCompromised: (error) => logger.error({ err: error }, 'single-flight lock lost while held'),
  };
  const blocklist = deps.blocklist ?? watchBlocklist(store.root, { extraHosts: config.blockedHosts });

  /** 451 `blocked` when an operator took this link, host or image down (not a fetch failure: no backoff record). */
  async function refuseBlocked(query: BlockQuery): Promise<void> {
    const entry = isBlocked(await blocklist.current(), query);
    if (entry !== null) {
      throw new ImageproxyError('blocked', 'taken down by the operator', { detail: `blocklist ${entry.kind} ${entry.value}` });
    }
  }

  /** What a fetched image is matched on: its host after redirects, and its bytes as fetched and as they would be stored. */
  function fetchedQuery(request: ImageRequest, fetched: FetchedImage, storedBytes: Uint8Array): BlockQuery {
    const finalHost = URL.canParse(fetched.finalUrl) ? new URL(fetched.finalUrl).hostname : request.imageUrl.hostname;
    return { key: request.key, host: finalHost, digests: [sha256Hex(fetched.bytes), sha256Hex(storedBytes)] };
  }

  async function refuseDuringBackoff(request: ImageRequest, stem: string): Promise<void> {
    const record = await store.readFailure(request.link.bucket, request.key, stem);
    const remaining = backoffRemainingSeconds(record, now());
    if (remaining > 0) {
      throw new ImageproxyError('backoff', 'earlier attempt failed, retry later', {
        retryAfterSeconds: remaining,
        detail: `failure #${record?.failures} (${record?.code}: ${record?.detail ?? ''})`,
      });
    }
  }

  /** Runs a step that may fail because of the origin or its bytes, recording such failures. */
  async function withBackoff<T>(request: ImageRequest, stem: string, step: () => Promise<T>): Promise<T> {
    await refuseDuringBackoff(request, stem);
    try {
      const result = await step();
      await store.clearFailure(request.link.bucket, request.key, stem);
      return result;
    } catch (thrown) {
      const error = toImageproxyError(thrown);
      if (BACKOFF_CODES.has(error.code)) {
        const previous = await store.readFailure(request.link.bucket, request.key, stem);
        const record = recordFailure(previous, { code: error.code, detail: error.detail ?? error.message }, now(), config.backoff);
        await store.writeFailure(request.link.bucket, request.key, stem, record);
        logger.warn(
          { code: error.code, detail: error.detail, url: request.imageUrl.href, failures: record.failures, retryAt: new Date(record.retryAtMs).toISOString() },
          'fetch failed; backing off',
        );
      }
      throw error;
    }
  }

  async function fetchOriginal(request: ImageRequest): Promise<FetchedImage> {
    const started = now();
    const stopTimer = metrics.fetchSeconds.startTimer();
    let fetched: FetchedImage;
    try {
      fetched = await fetcher.fetchImage(request.imageUrl);
    } catch (error) {
      metrics.fetches.inc({ result: toImageproxyError(error).code });
      throw error;
    } finally {
      stopTimer();
    }
    metrics.fetches.inc({ result: 'ok' });
    metrics.fetchedBytes.inc(fetched.bytes.length);
    logger.info(
      { url: request.imageUrl.href, bytes: fetched.bytes.length, format: fetched.format, width: fetched.width, height: fetched.height, ms: now() - started },
      'fetched',
    );
    return fetched;
  }

  /**
   * The bytes a visitor will get: metadata stripped (server/originals.ts), for stored
   * originals and pass-through alike; refused if an operator blocked them.
   */
  async function prepareFetched(request: ImageRequest, fetched: FetchedImage): Promise<OriginalImage> {
    const prepared = prepareOriginal(fetched, { stripMetadata: config.stripMetadata });
    if (prepared.failed) {
      logger.warn({ url: request.imageUrl.href, reason: prepared.unchangedReason }, 'metadata not stripped; kept as fetched');
    } else if (prepared.removed.length > 0 || prepared.unchangedReason !== null) {
      logger.debug(
        { url: request.imageUrl.href, removed: prepared.removed, reason: prepared.unchangedReason, bytes: prepared.image.bytes.length },
        prepared.removed.length > 0 ? 'metadata stripped' : 'metadata kept',
      );
    }
    await refuseBlocked(fetchedQuery(request, fetched, prepared.image.bytes));
    return prepared.image;
  }

  async function fetchAndStore(request: ImageRequest): Promise<StoredImage> {
    return withBackoff(request, request.key, async () => {
      const fetched = await fetchOriginal(request);
      const image = await prepareFetched(request, fetched);
      return storeOriginal(store, request.link.bucket, request.key, image, {
        sourceUrl: request.imageUrl.href,
        originContentType: fetched.originContentType ?? null,
        fetchedAt: new Date(now()).toISOString(),
      });
    });
  }

  function ensureOriginal(request: ImageRequest): Promise<StoredImage> {
    const { bucket } = request.link;
    const findOriginal = (): Promise<StoredImage | null> => store.find(bucket, request.key, null);
    return flights.run(`original:${bucket}/${request.key}`, async () =>
      withFileLock(await store.prepareLock(bucket, request.key, request.key), lockOptions, findOriginal, () =>
        fetchAndStore(request),
      ),
    );
  }

  function ensureVariant(request: ImageRequest, label: string): Promise<StoredImage> {
    const { bucket } = request.link;
    const stem = fileStem(request.key, label);
    const findVariant = (): Promise<StoredImage | null> => store.find(bucket, request.key, label);
    return flights.run(`variant:${bucket}/${stem}`, async () => {
      const original = await ensureOriginal(request);
      return withFileLock(await store.prepareLock(bucket, request.key, stem), lockOptions, findVariant, () =>
        withBackoff(request, stem, async () => {
          if (queuedResizes >= config.limits.maxQueuedResizes) {
            throw new ImageproxyError('busy', 'too many thumbnails in the making, try again', {
              retryAfterSeconds: 2,
              detail: `${queuedResizes} resizes queued (limits.maxQueuedResizes)`,
            });
          }
          queuedResizes += 1;
          try {
            return await resizeAndStore(request, original, label);
          } finally {
            queuedResizes -= 1;
          }
        }),
      );
    });
  }

  async function resizeAndStore(request: ImageRequest, original: StoredImage, label: string): Promise<StoredImage> {
    const { size } = request.link;
    const format = formatFromExt(original.ext);
    if (format === null || size.kind !== 'box') throw new Error(`cannot resize ${original.relativePath}`);
    const started = now();
    const input = await readFile(original.path);
    const stopTimer = metrics.resizeSeconds.startTimer({ engine: engine.name });
    let resized: ResizeResult;
    try {
      resized = await engine.resize({ input, format, maxHeight: size.maxHeight, maxWidth: size.maxWidth });
    } catch (error) {
      metrics.resizes.inc({ engine: engine.name, result: toImageproxyError(error).code });
      throw error;
    } finally {
      stopTimer();
    }
    metrics.resizes.inc({ engine: engine.name, result: 'ok' });
    await refuseBlocked({ key: request.key });
    const image = await store.storeImage(request.link.bucket, request.key, label, FORMAT_INFO[resized.format].ext, resized.bytes);
    logger.info(
      { path: image.relativePath, width: resized.width, height: resized.height, frames: resized.frames, engine: engine.name, ms: now() - started },
      'resized',
    );
    return image;
  }

  async function passThrough(request: ImageRequest): Promise<ImageAnswer> {
    const fetched = await flights.run(`proxy:${request.link.bucket}/${request.key}`, () =>
      withBackoff(request, request.key, () => fetchOriginal(request)),
    );
    const image = await prepareFetched(request, fetched);
    return { kind: 'passthrough', bytes: image.bytes, contentType: FORMAT_INFO[image.format].contentType };
  }

  return {
    async get(request: ImageRequest): Promise<ImageAnswer> {
      const { bucket } = request.link;
      const label = variantLabelOf(request);
      // Before the lookup: a file a takedown left behind is never served by the app.
      await refuseBlocked({ key: request.key, host: request.imageUrl.hostname });
      const stored = await store.find(bucket, request.key, label);
      if (stored !== null) return { kind: 'stored', image: stored };
      if (request.link.proxy) return passThrough(request);
      const image = label === null ? await ensureOriginal(request) : await ensureVariant(request, label);
      return { kind: 'stored', image };
    },
    close: () => engine.close(),
  };
}
