/**
 * The image service of a running server: stored file if there is one; otherwise fetch
 * the original once (single-flight, backoff after failures), store it, and make the
 * requested variant from it. `/proxy` links pass the bytes through without storing.
 */
import { access, constants as fsConstants } from 'node:fs/promises';
import { dirname } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { AdmissionGate, BUSY_RETRY_AFTER_SECONDS, type GatePlace } from '../fetch/admission.js';
import { recordFailure, rememberedFailure } from '../fetch/backoff.js';
import { isBlocked, type BlockQuery } from '../takedown/blocklist.js';
import { watchBlocklist, type BlocklistWatcher } from '../takedown/blocklistStore.js';
import type { Config } from '../config/config.js';
import { isMissingAfterMkdir, storageError } from '../tree/diskErrors.js';
import type { ResizeEngine, ResizeResult } from '../images/engine.js';
import { ImageproxyError, toImageproxyError, type ErrorCode } from '../errors.js';
import type { FetchedImage } from '../fetch/fetcher.js';
import { variantLabelOf, type ImageAnswer, type ImageRequest, type ImageService } from './imageService.js';
import { fileStem, isImageExtension, type ImageExtension } from '../contract/layout.js';
import type { Logger } from '../observe/log.js';
import { shortUrl, summarizeCause } from '../observe/logFields.js';
import { createMetrics, type Metrics } from '../observe/metrics.js';
import { digestsOf, originalMetadata, prepareOriginal, variantRecordOf, type OriginalImage, type OriginalProvenance } from '../tree/originals.js';
import { isIrregularFileError, readRegularFile } from '../tree/regularFile.js';
import { FORMAT_INFO, formatFromExt, type ImageFormat } from '../images/sniff.js';
import { hostLock, InProcessFlights, LOCK_STALE_MS, treeLock, withLock, type SingleFlightLock, type TreeLockOptions } from '../fetch/singleFlight.js';
import type { ImageStore, StagedFile, StoredImage } from '../tree/store.js';

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
  /** The takedown blocklist; by default the tree's own file, watched (server/takedown/blocklistStore.ts). */
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

/** The extension a URL's path ends in (`.jpeg` as jpg), or null: where a lookup looks first. */
export function likelyExtension(url: URL): ImageExtension | null {
  const match = /\.([a-z0-9]{3,4})$/i.exec(url.pathname);
  if (match === null) return null;
  const ext = (match[1] as string).toLowerCase();
  if (ext === 'jpeg') return 'jpg';
  return isImageExtension(ext) ? ext : null;
}

/**
 * An original being made sure of (one per key in a process): its prepared bytes as soon
 * as this process has them, so thumbnails are made from memory while the original is
 * still being written, and the stored file once it is on disk.
 */
interface OriginalFlight {
  /** The prepared bytes; null when the original was found stored, or the fetch failed. */
  image: Promise<OriginalImage | null>;
  stored: Promise<StoredImage>;
}

/** A thumbnail made by this process: the stored file and the bytes written to it. */
interface MadeVariant {
  image: StoredImage;
  content: Buffer;
}

/** Which of settled results failed: every staged file is discarded, the first failure thrown. */
async function stagedOrThrow(results: PromiseSettledResult<StagedFile>[]): Promise<StagedFile[]> {
  const failure = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
  if (failure === undefined) return results.map((result) => (result as PromiseFulfilledResult<StagedFile>).value);
  await Promise.all(results.map((result) => (result.status === 'fulfilled' ? result.value.discard() : undefined)));
  throw failure.reason;
}

export function createFetchingImageService(deps: FetchingServiceDependencies): ImageService {
  const { config, store, fetcher, engine, logger } = deps;
  const now = deps.now ?? Date.now;
  const metrics = deps.metrics ?? createMetrics({ processMetrics: false });
  const flights = new InProcessFlights();
  const originalFlights = new Map<string, OriginalFlight>();
  // Admission before work (server/fetch/admission.ts): a miss waits for a slot, bounded in
  // count and time, or answers `busy` at once; nothing unbounded piles up in memory.
  const fetchGate = new AdmissionGate({
    name: 'fetch',
    maxActive: config.limits.maxConcurrentFetches,
    maxQueued: config.limits.maxQueuedFetches,
    maxWaitMs: config.limits.maxQueueWaitMs,
    retryAfterSeconds: BUSY_RETRY_AFTER_SECONDS,
  });
  const resizeGate = new AdmissionGate({
    name: 'resize',
    maxActive: config.limits.maxConcurrentResizes,
    maxQueued: config.limits.maxQueuedResizes,
    maxWaitMs: config.limits.maxQueueWaitMs,
    retryAfterSeconds: BUSY_RETRY_AFTER_SECONDS,
  });
  const treeLockOptions: TreeLockOptions = {
    staleMs: LOCK_STALE_MS,
    onCompromised: (error) => logger.error({ err: error }, 'single-flight lock lost while held'),
  };
  // The abstract socket namespace is Linux's: elsewhere (a developer's machine) the tree lock.
  const lockScope = process.platform === 'linux' ? config.singleFlightScope : 'tree';
  // What thumbnails waiting for a resize slot hold of their originals' bytes, all together
  // (at most limits.maxWaitingResizeBytes).
  let waitingInputBytes = 0;
  const blocklist = deps.blocklist ?? watchBlocklist(store.root, { extraHosts: config.blockedHosts });

  /** 451 `blocked` when an operator took this link, host or image down (not a fetch failure: no backoff record). */
  async function refuseBlocked(query: BlockQuery): Promise<void> {
    const entry = isBlocked(await blocklist.current(), query);
    if (entry !== null) {
      throw new ImageproxyError('blocked', 'taken down by the operator', { detail: `blocklist ${entry.kind} ${entry.value}` });
    }
  }

  /** What a fetched image is matched on: its host after redirects, and its bytes as fetched and as they would be stored. */
  function fetchedQuery(request: ImageRequest, fetched: FetchedImage, digests: string[]): BlockQuery {
    const finalHost = URL.canParse(fetched.finalUrl) ? new URL(fetched.finalUrl).hostname : request.imageUrl.hostname;
    return { key: request.key, host: finalHost, digests };
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
    const previous = await store.readFailure(request.link.bucket, request.key, stem);
    const remembered = rememberedFailure(previous, now());
    if (remembered !== null) throw remembered;
    try {
      const result = await step();
      // Only a record that was there is removed: a miss without one costs no unlink.
      if (previous !== null) await store.clearFailure(request.link.bucket, request.key, stem);
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
   * The bytes a visitor will get: metadata stripped (server/tree/originals.ts), for stored
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
    const { digests, image } = digestsOf(fetched.bytes, prepared.image);
    await refuseBlocked(fetchedQuery(request, fetched, digests));
    return image;
  }

  /**
   * Sidecar and original written at once, then renamed sidecar first (the rule of
   * server/tree/originals.ts storeOriginal: once the image exists its sidecar does too).
   */
  async function storeOriginalNow(request: ImageRequest, image: OriginalImage, provenance: OriginalProvenance): Promise<StoredImage> {
    const { bucket } = request.link;
    const [sidecar, original] = (await stagedOrThrow(
      await Promise.allSettled([
        store.stageMetadata(bucket, request.key, originalMetadata(image, provenance)),
        store.stageImage(bucket, request.key, null, FORMAT_INFO[image.format].ext, image.bytes),
      ]),
    )) as [StagedFile, StagedFile];
    try {
      await sidecar.commit();
    } catch (error) {
      await original.discard();
      throw error;
    }
    return original.commit();
  }

  /**
   * Held from before the fetch until the original is stored: its bytes are in memory
   * until then. `announce` hands the prepared bytes to thumbnails before the writes.
   */
  async function fetchAndStore(request: ImageRequest, place: GatePlace, announce: (image: OriginalImage) => void): Promise<StoredImage> {
    return withBackoff(request, request.key, async () => {
      await place.start();
      try {
        const fetched = await fetchOriginal(request);
        const image = await prepareFetched(request, fetched);
        announce(image);
        // The thumbnails waiting for these bytes start their resize first (their steps
        // up to the engine are promise continuations, run before the next turn): the
        // resize is the longest step of a miss, and the writes below run beside it.
        await nextTurn();
        return await storeOriginalNow(request, image, {
          sourceUrl: request.imageUrl.href,
          originContentType: fetched.originContentType ?? null,
          fetchedAt: new Date(now()).toISOString(),
        });
      } finally {
        place.release();
      }
    });
  }

  /** The cross-process lock around an original's fetch (server/fetch/singleFlight.ts, `singleFlightScope`). */
  async function originalLock(request: ImageRequest): Promise<SingleFlightLock> {
    const { bucket } = request.link;
    if (lockScope === 'host') {
      // The tree lock's mkdir fails on a read-only tree before any fetch; this lock
      // writes nothing, so the tree is asked first.
      await store.prepareToWrite(bucket, request.key);
      return hostLock(await store.hostLockName(bucket, request.key));
    }
    return treeLock(await store.prepareLock(bucket, request.key), treeLockOptions);
  }

  /**
   * The original of a request, fetched once per key (in-process flights, and across
   * processes originalLock, held only around the fetch and the original's write).
   * `lookedUp`: the caller has just looked for it and found nothing, so the first
   * lookup before the lock is skipped (the one after taking the lock stays).
   */
  function ensureOriginal(request: ImageRequest, lookedUp: boolean): OriginalFlight {
    const { bucket } = request.link;
    const id = `${bucket}/${request.key}`;
    const running = originalFlights.get(id);
    if (running !== undefined) return running;
    // A place in the fetch queue first: past it, `busy` before any lock or lookup is made.
    const place = fetchGate.enter();
    const likely = likelyExtension(request.imageUrl);
    let skipLookup = lookedUp;
    const findOriginal = async (): Promise<StoredImage | null> => {
      if (skipLookup) {
        skipLookup = false;
        return null;
      }
      return store.find(bucket, request.key, null, likely);
    };
    let announce: (image: OriginalImage | null) => void = () => undefined;
    const image = new Promise<OriginalImage | null>((resolve) => {
      announce = resolve;
    });
    const stored = (async () =>
      withLock(await originalLock(request), config.singleFlightWaitMs, findOriginal, () => fetchAndStore(request, place, announce)))();
    const flight: OriginalFlight = { image, stored };
    originalFlights.set(id, flight);
    // Found stored, or failed before any bytes: thumbnails then wait for `stored`.
    void stored
      .then(
        () => announce(null),
        () => announce(null),
      )
      .finally(() => {
        // Found stored (under the lock, or by another process) or failed: the place is free.
        place.release();
        originalFlights.delete(id);
      });
    return flight;
  }

  /** The bytes and format a thumbnail is made from, and the original it must not be renamed before. */
  async function resizeSource(
    request: ImageRequest,
    known: StoredImage | null,
  ): Promise<{ input: Buffer; format: ImageFormat; original: Promise<StoredImage> }> {
    if (known !== null) {
      const format = formatFromExt(known.ext);
      const input = await readStoredOriginal(known).catch((error: unknown) => {
        // Purged, moved aside or replaced since the lookup: the original's flight looks again.
        if (error instanceof ImageproxyError && error.code === 'not_stored') return null;
        throw error;
      });
      if (format !== null && input !== null) return { input, format, original: Promise.resolve(known) };
    }
    const flight = ensureOriginal(request, known === null);
    const image = await flight.image;
    if (image !== null) return { input: image.bytes, format: image.format, original: flight.stored };
    const stored = await flight.stored;
    const format = formatFromExt(stored.ext);
    if (format === null) throw new Error(`cannot resize ${stored.relativePath}`);
    return { input: await readStoredOriginal(stored), format, original: flight.stored };
  }

  /**
   * A thumbnail, made once per process (in-process flight). It takes no lock of its
   * own across processes: two processes making the same thumbnail at once each rename a
   * complete file of the same content into place, which is harmless; the original's
   * fetch, which is not, stays under the cross-process lock.
   */
  function ensureVariant(request: ImageRequest, label: string, knownOriginal: StoredImage | null): Promise<MadeVariant> {
    const { bucket } = request.link;
    const stem = fileStem(request.key, label);
    return flights.run(`variant:${bucket}/${stem}`, async () => {
      // A place in the resize queue before the original is fetched: a thumbnail refused
      // `busy` has fetched nothing. Its running slot is taken only once the bytes are there.
      const place = resizeGate.enter();
      try {
        let input: Buffer | null;
        let format: ImageFormat;
        let original: Promise<StoredImage>;
        // No name kept for the source: `input` is the only reference to its bytes.
        ({ input, format, original } = await resizeSource(request, knownOriginal));
        const started = now();
        const staged = await withBackoff(request, stem, async () => {
          const bytes = (input as Buffer).length;
          if (!place.wouldWait()) {
            await place.start();
          } else if (waitingInputBytes + bytes <= config.limits.maxWaitingResizeBytes) {
            // A short wait (a few thumbnails queued): the bytes stay, within a budget,
            // rather than being read back from the disk a moment later.
            waitingInputBytes += bytes;
            try {
              await place.start();
            } finally {
              waitingInputBytes -= bytes;
            }
          } else {
            // A slot may be seconds away (a burst, the jimp engine): past the budget a
            // waiting thumbnail holds none of the original's bytes; they are read back
            // from the stored original when its turn comes. A full queue is then a count
            // of requests, not of megabytes.
            input = null;
            await place.start();
            input = await readStoredOriginal(await original);
          }
          return resizeAndStage(request, input as Buffer, format, label);
        });
        // A served name is always complete and never ahead of its original: the
        // thumbnail becomes visible only once the original is in place, and its record
        // (in the original's sidecar) is written before it, as an original's sidecar is.
        const { resized } = staged;
        try {
          await original;
          await store.recordVariant(bucket, request.key, label, variantRecordOf(resized.bytes, FORMAT_INFO[resized.format].contentType));
        } catch (error) {
          await staged.file.discard();
          throw error;
        }
        const image = await staged.file.commit();
        logger.info(
          { path: image.relativePath, width: resized.width, height: resized.height, frames: resized.frames, engine: engine.name, ms: now() - started },
          'resized',
        );
        return { image, content: resized.bytes };
      } finally {
        place.release();
      }
    });
  }

  /**
   * A stored original's bytes, read through server/tree/regularFile.ts (no symlink followed,
   * no FIFO opened, at most limits.maxBytes: no original we store is larger). `not_stored`
   * if it was removed (purged) or replaced by something that is no regular file meanwhile;
   * `bad_image` if it is over the cap.
   */
  async function readStoredOriginal(stored: StoredImage): Promise<Buffer> {
    try {
      return await readRegularFile(stored.path, config.limits.maxBytes);
    } catch (error) {
      if (isIrregularFileError(error) && error.reason === 'too_large') {
        throw new ImageproxyError('bad_image', 'image cannot be resized', { detail: `${stored.relativePath}: over limits.maxBytes`, cause: error });
      }
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' && !isIrregularFileError(error)) throw error;
      throw new ImageproxyError('not_stored', 'image is not stored', { detail: `${stored.relativePath} removed before its thumbnail was made`, cause: error });
    }
  }

  async function resizeAndStage(
    request: ImageRequest,
    input: Buffer,
    format: ImageFormat,
    label: string,
  ): Promise<{ file: StagedFile; resized: ResizeResult }> {
    const { size } = request.link;
    if (size.kind !== 'box') throw new Error(`cannot resize to ${label}`);
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
    const file = await store.stageImage(request.link.bucket, request.key, label, FORMAT_INFO[resized.format].ext, resized.bytes);
    return { file, resized };
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
      const likely = likelyExtension(request.imageUrl);
      const stored = await store.find(bucket, request.key, label, likely);
      if (stored !== null) return { kind: 'stored', image: stored, cache: 'hit' };
      try {
        if (request.link.proxy) return await passThrough(request);
        if (label === null) {
          const flight = ensureOriginal(request, true);
          const image = await flight.stored;
          // The prepared bytes are what was written, unless another process stored it first.
          const prepared = await flight.image;
          return { kind: 'stored', image, cache: 'miss', ...(prepared === null ? {} : { content: prepared.bytes }) };
        }
        // One more lookup, on thumbnail misses only: was the original there already?
        const original = await store.find(bucket, request.key, null, likely);
        const made = await ensureVariant(request, label, original);
        return { kind: 'stored', image: made.image, content: made.content, cache: original !== null ? 'variant' : 'miss' };
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
