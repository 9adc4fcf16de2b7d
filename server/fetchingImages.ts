/**
 * The image service of a running server: stored file if there is one; otherwise fetch
 * the original once (single-flight, backoff after failures), store it, and make the
 * requested variant from it. `/proxy` links pass the bytes through without storing.
 */
import { access, constants as fsConstants, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { AdmissionGate } from './admission.js';
import { recordFailure, rememberedFailure } from './backoff.js';
import { isBlocked, type BlockQuery } from './blocklist.js';
import { watchBlocklist, type BlocklistWatcher } from './blocklistStore.js';
import type { Config } from './config.js';
import { isMissingAfterMkdir, storageError } from './diskErrors.js';
import type { ResizeEngine, ResizeResult } from './engines/engine.js';
import { ImageproxyError, toImageproxyError, type ErrorCode } from './errors.js';
import type { FetchedImage } from './fetcher.js';
import { variantLabelOf, type ImageAnswer, type ImageRequest, type ImageService } from './imageService.js';
import { fileStem } from './layout.js';
import type { Logger } from './log.js';
import { shortUrl, summarizeCause } from './logFields.js';
import { createMetrics, type Metrics } from './metrics.js';
import { prepareOriginal, sha256Hex, storeOriginal, type OriginalImage } from './originals.js';
import { FORMAT_INFO, formatFromExt } from './sniff.js';
import { InProcessFlights, LOCK_STALE_MS, withFileLock, type FileLockOptions } from './singleFlight.js';
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

/** Retry-After of a `busy` answer: a queue drains within seconds, not minutes. */
const BUSY_RETRY_SECONDS = 2;

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
  // Admission before work (server/admission.ts): a miss waits for a slot, bounded in
  // count and time, or answers `busy` at once; nothing unbounded piles up in memory.
  const fetchGate = new AdmissionGate({
    name: 'fetch',
    maxActive: config.limits.maxConcurrentFetches,
    maxQueued: config.limits.maxQueuedFetches,
    maxWaitMs: config.limits.maxQueueWaitMs,
    retryAfterSeconds: BUSY_RETRY_SECONDS,
  });
  const resizeGate = new AdmissionGate({
    name: 'resize',
    maxActive: config.limits.maxConcurrentResizes,
    maxQueued: config.limits.maxQueuedResizes,
    maxWaitMs: config.limits.maxQueueWaitMs,
    retryAfterSeconds: BUSY_RETRY_SECONDS,
  });
  const lockOptions: FileLockOptions = {
    waitMs: config.singleFlightWaitMs,
    staleMs: LOCK_STALE_MS,
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

  /** During a backoff window, the remembered failure answers again (server/backoff.ts). */
  async function refuseDuringBackoff(request: ImageRequest, stem: string): Promise<void> {
    const remembered = rememberedFailure(await store.readFailure(request.link.bucket, request.key, stem), now());
    if (remembered !== null) throw remembered;
  }

  /**
   * A disk fault of a write below the key's directory as 507 `storage_full` or 500
   * `storage_unwritable` naming the directory; anything else unchanged.
   */
  async function asStorageError(thrown: unknown, request: ImageRequest): Promise<unknown> {
    const directory = store.directoryOf(request.link.bucket, request.key);
    if (isMissingAfterMkdir(thrown)) {
      // Recursive mkdir says ENOENT on a read-only tree: ask the nearest existing parent why.
      for (let parent = directory; parent !== dirname(parent); parent = dirname(parent)) {
        try {
          await access(parent, fsConstants.F_OK);
        } catch {
          continue;
        }
        try {
          await access(parent, fsConstants.W_OK);
        } catch (probe) {
          return storageError(probe, parent) ?? thrown;
        }
        break;
      }
    }
    return storageError(thrown, directory) ?? thrown;
  }

  /** Runs a step that may fail because of the origin or its bytes, recording such failures. */
  async function withBackoff<T>(request: ImageRequest, stem: string, step: () => Promise<T>): Promise<T> {
    await refuseDuringBackoff(request, stem);
    try {
      const result = await step();
      await store.clearFailure(request.link.bucket, request.key, stem);
      return result;
    } catch (thrown) {
      const error = toImageproxyError(await asStorageError(thrown, request));
      if (BACKOFF_CODES.has(error.code)) {
        const previous = await store.readFailure(request.link.bucket, request.key, stem).catch(() => null);
        const record = recordFailure(previous, { code: error.code, detail: error.detail ?? error.message, message: error.message }, now(), config.backoff);
        // The origin's failure first: a disk that cannot take the record must not hide it.
        logger.warn(
          { code: error.code, detail: error.detail, url: shortUrl(request.imageUrl.href), failures: record.failures, retryAt: new Date(record.retryAtMs).toISOString() },
          'fetch failed; backing off',
        );
        try {
          await store.writeFailure(request.link.bucket, request.key, stem, record);
        } catch (writeError) {
          const storage = toImageproxyError(await asStorageError(writeError, request));
          logger.error(
            { code: storage.code, detail: storage.detail, err: summarizeCause(writeError), failed: error.code },
            'backoff record not written; answering the fetch failure without it',
          );
        }
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
      { url: shortUrl(request.imageUrl.href), bytes: fetched.bytes.length, format: fetched.format, width: fetched.width, height: fetched.height, ms: now() - started },
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
      logger.warn({ url: shortUrl(request.imageUrl.href), reason: prepared.unchangedReason }, 'metadata not stripped; kept as fetched');
    } else if (prepared.removed.length > 0 || prepared.unchangedReason !== null) {
      logger.debug(
        { url: shortUrl(request.imageUrl.href), removed: prepared.removed, reason: prepared.unchangedReason, bytes: prepared.image.bytes.length },
        prepared.removed.length > 0 ? 'metadata stripped' : 'metadata kept',
      );
    }
    await refuseBlocked(fetchedQuery(request, fetched, prepared.image.bytes));
    return prepared.image;
  }

  /** Held from before the fetch until the original is stored: its bytes are in memory until then. */
  async function fetchAndStore(request: ImageRequest): Promise<StoredImage> {
    return withBackoff(request, request.key, async () => {
      const release = await fetchGate.admit();
      try {
        const fetched = await fetchOriginal(request);
        const image = await prepareFetched(request, fetched);
        return await storeOriginal(store, request.link.bucket, request.key, image, {
          sourceUrl: request.imageUrl.href,
          originContentType: fetched.originContentType ?? null,
          fetchedAt: new Date(now()).toISOString(),
        });
      } finally {
        release();
      }
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
      // A place in the resize queue before the original is fetched: a thumbnail refused
      // `busy` has fetched nothing. Its running slot is taken only once the original is there.
      const place = resizeGate.enter();
      try {
        const original = await ensureOriginal(request);
        return await withFileLock(await store.prepareLock(bucket, request.key, stem), lockOptions, findVariant, () =>
          withBackoff(request, stem, async () => {
            await place.start();
            return resizeAndStore(request, original, label);
          }),
        );
      } finally {
        place.release();
      }
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
      withBackoff(request, request.key, async () => {
        const release = await fetchGate.admit();
        try {
          return await fetchOriginal(request);
        } finally {
          release();
        }
      }),
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
      if (stored !== null) return { kind: 'stored', image: stored, cache: 'hit' };
      try {
        if (request.link.proxy) return await passThrough(request);
        if (label === null) return { kind: 'stored', image: await ensureOriginal(request), cache: 'miss' };
        // One more lookup, on thumbnail misses only: was the original there already?
        const originalStored = (await store.find(bucket, request.key, null)) !== null;
        return { kind: 'stored', image: await ensureVariant(request, label), cache: originalStored ? 'variant' : 'miss' };
      } catch (thrown) {
        // Lock directories and writes outside a fetch step fail on a full or read-only disk too.
        throw await asStorageError(thrown, request);
      }
    },
    queueDepths: () => {
      const fetches = fetchGate.figures;
      const resizes = resizeGate.figures;
      return { fetch: fetches.running + fetches.waiting, resize: resizes.running + resizes.waiting };
    },
    close: () => engine.close(),
  };
}
