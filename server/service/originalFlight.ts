/**
 * The original's flight: one fetch per key however many requests and processes ask for
 * it. A place in the fetch queue, the cross-process lock, the fetch, the metadata strip,
 * the digests and the takedown check of the fetched bytes, then sidecar and image
 * committed by the store (ImageBackend.storeOriginal). The prepared bytes are handed to
 * the thumbnails waiting for them before they are written. `/proxy` links take the same
 * fetch and strip, and keep nothing.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { GatePlace } from '../fetch/admission.js';
import { toImageproxyError } from '../errors.js';
import type { FetchedImage } from '../fetch/fetcher.js';
import { shortUrl } from '../observe/logFields.js';
import { digestsOf, prepareOriginal, type OriginalImage } from '../tree/originals.js';
import { hostLock, InProcessFlights, LOCK_STALE_MS, treeLock, withLock, type SingleFlightLock, type TreeLockOptions } from '../fetch/singleFlight.js';
import type { StoredImage, ThumbnailToCommit } from '../tree/store.js';
import { isImageExtension, type ImageExtension } from '../contract/layout.js';
import type { ImageRequest } from './imageService.js';
import { createMissGate, type MissContext } from './missSteps.js';

export interface ImageFetcher {
  fetchImage(url: URL, signal?: AbortSignal): Promise<FetchedImage>;
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
  /**
   * For the thumbnail whose request started the flight (ensure's `companion`), null for
   * everyone else: once `image` gave it bytes, the flight waits for it to say what it
   * made (or null: nothing will be), and commits the two together
   * (ImageBackend.storeOriginalWithThumbnail). Resolves with the thumbnail committed; null
   * when it offered nothing.
   */
  companion: CompanionThumbnail | null;
}

export interface CompanionThumbnail {
  commitWith(thumbnail: ThumbnailToCommit | null): Promise<StoredImage | null>;
}

/** What the thumbnails' flight (server/service/variantFlight.ts) asks of the original's. */
export interface OriginalSource {
  /**
   * The original of a request, fetched once per key. `lookedUp`: the caller has just
   * looked for it and found nothing, so no lookup is made before the lock (the one
   * under it, which another process's write may have made true, stays). `companion`: the
   * caller is a thumbnail that offers to be committed with the original if its request
   * starts the flight (OriginalFlight.companion).
   */
  ensure(request: ImageRequest, lookedUp: boolean, companion?: boolean): OriginalFlight;
}

export interface OriginalFlights extends OriginalSource {
  /** A `/proxy` link's image: fetched (once for concurrent requests) and prepared, not stored. */
  passThrough(request: ImageRequest): Promise<OriginalImage>;
  /** Fetches running or waiting. */
  queueDepth(): number;
}

/** The extension a URL's path ends in (`.jpeg` as jpg), or null: where a lookup looks first. */
export function likelyExtension(url: URL): ImageExtension | null {
  const match = /\.([a-z0-9]{3,4})$/i.exec(url.pathname);
  if (match === null) return null;
  const ext = (match[1] as string).toLowerCase();
  if (ext === 'jpeg') return 'jpg';
  return isImageExtension(ext) ? ext : null;
}

/** The flight's side of a companion thumbnail: what it offers, and where its outcome goes. */
interface CompanionCommit {
  offered: Promise<ThumbnailToCommit | null>;
  settle(outcome: PromiseSettledResult<StoredImage | null>): void;
  thumbnail: CompanionThumbnail;
}

function companionCommit(): CompanionCommit {
  let offer: (thumbnail: ThumbnailToCommit | null) => void = () => undefined;
  const offered = new Promise<ThumbnailToCommit | null>((resolve) => {
    offer = resolve;
  });
  let settle: (outcome: PromiseSettledResult<StoredImage | null>) => void = () => undefined;
  const outcome = new Promise<PromiseSettledResult<StoredImage | null>>((resolve) => {
    settle = resolve;
  });
  return {
    offered,
    settle,
    thumbnail: {
      async commitWith(thumbnail) {
        offer(thumbnail);
        // Nothing offered: nothing to wait for (the flight may have found the original stored).
        if (thumbnail === null) return null;
        const settled = await outcome;
        if (settled.status === 'rejected') throw settled.reason;
        return settled.value;
      },
    },
  };
}

export function createOriginalFlights(context: MissContext, fetcher: ImageFetcher): OriginalFlights {
  const { config, store, logger, metrics, now, takedown } = context;
  const flights = new Map<string, OriginalFlight>();
  const passThroughs = new InProcessFlights();
  const fetchGate = createMissGate(context, 'fetch');
  const treeLockOptions: TreeLockOptions = {
    staleMs: LOCK_STALE_MS,
    onCompromised: (error) => logger.error({ err: error }, 'single-flight lock lost while held'),
  };
  // The abstract socket namespace is Linux's: elsewhere (a developer's machine) the tree lock.
  const lockScope = process.platform === 'linux' ? config.singleFlightScope : 'tree';

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
   * originals and pass-through alike; refused if an operator blocked them (their host
   * after redirects, their digests as fetched and as stored).
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
    const finalHost = URL.canParse(fetched.finalUrl) ? new URL(fetched.finalUrl).hostname : request.imageUrl.hostname;
    await takedown.refuse({ key: request.key, host: finalHost, digests });
    return image;
  }

  /**
   * Held from before the fetch until the original is stored: its bytes are in memory
   * until then. `announce` hands the prepared bytes to thumbnails before the writes.
   */
  async function fetchAndStore(
    request: ImageRequest,
    place: GatePlace,
    announce: (image: OriginalImage) => void,
    companion: CompanionCommit | null,
  ): Promise<StoredImage> {
    return context.withBackoff(request, request.key, async () => {
      await place.start();
      try {
        const fetched = await fetchOriginal(request);
        const image = await prepareFetched(request, fetched);
        announce(image);
        // The thumbnails waiting for these bytes start their resize first (their steps
        // up to the engine are promise continuations, run before the next turn): the
        // resize is the longest step of a miss, and the writes below run beside it.
        await nextTurn();
        const provenance = { sourceUrl: request.imageUrl.href, originContentType: fetched.originContentType ?? null, fetchedAt: new Date(now()).toISOString() };
        if (companion === null) return await store.storeOriginal(request.link.bucket, request.key, image, provenance);
        let committed: Awaited<ReturnType<typeof store.storeOriginalWithThumbnail>>;
        try {
          committed = await store.storeOriginalWithThumbnail(request.link.bucket, request.key, image, provenance, companion.offered);
        } catch (error) {
          companion.settle({ status: 'rejected', reason: error });
          throw error;
        }
        companion.settle(committed.thumbnail ?? { status: 'fulfilled', value: null });
        return committed.original;
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

  function ensure(request: ImageRequest, lookedUp: boolean, withCompanion = false): OriginalFlight {
    const { bucket } = request.link;
    const id = `${bucket}/${request.key}`;
    const running = flights.get(id);
    if (running !== undefined) return { ...running, companion: null };
    const companion = withCompanion ? companionCommit() : null;
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
      withLock(await originalLock(request), config.singleFlightWaitMs, findOriginal, () => fetchAndStore(request, place, announce, companion)))();
    const flight: OriginalFlight = { image, stored, companion: null };
    flights.set(id, flight);
    // Found stored, or failed before any bytes: thumbnails then wait for `stored`.
    void stored
      .then(
        () => announce(null),
        () => announce(null),
      )
      .finally(() => {
        // Found stored (under the lock, or by another process) or failed: the place is free.
        place.release();
        flights.delete(id);
      });
    return companion === null ? flight : { ...flight, companion: companion.thumbnail };
  }

  async function passThrough(request: ImageRequest): Promise<OriginalImage> {
    const fetched = await passThroughs.run(`${request.link.bucket}/${request.key}`, () =>
      context.withBackoff(request, request.key, async () => {
        const release = await fetchGate.admit();
        try {
          return await fetchOriginal(request);
        } finally {
          release();
        }
      }),
    );
    return prepareFetched(request, fetched);
  }

  return {
    ensure,
    passThrough,
    queueDepth: () => fetchGate.figures.running + fetchGate.figures.waiting,
  };
}
