/**
 * The image service of a running server: the stored file if there is one; otherwise the
 * original's flight (server/service/originalFlight.ts: fetch once, store) and, for a
 * thumbnail, the variants' flight (server/service/variantFlight.ts: resize, stage,
 * commit after the original). `/proxy` links pass the bytes through without storing.
 * This module only wires them and makes the request's decisions: blocked, hit, which flight.
 */
import { watchBlocklist, type BlocklistWatcher } from '../takedown/blocklistStore.js';
import type { Config } from '../config/config.js';
import type { ResizeEngine } from '../images/engine.js';
import { variantLabelOf, type ImageAnswer, type ImageRequest, type ImageService } from './imageService.js';
import type { Logger } from '../observe/log.js';
import { createMetrics, type Metrics } from '../observe/metrics.js';
import { FORMAT_INFO } from '../images/sniff.js';
import { formatClassOf } from '../contract/accept.js';
import { ImageStore } from '../tree/store.js';
import { treeBackend, type ImageBackend } from '../storage/imageBackend.js';
import { createMissContext, createTakedownCheck } from './missSteps.js';
import { createOriginalFlights, likelyExtension, type ImageFetcher } from './originalFlight.js';
import { createVariantFlights } from './variantFlight.js';

export interface FetchingServiceDependencies {
  config: Config;
  /** The tree (an ImageStore, or its backend) or a bucket (server/storage/imageBackend.ts). */
  store: ImageStore | ImageBackend;
  fetcher: ImageFetcher;
  engine: ResizeEngine;
  logger: Logger;
  metrics?: Metrics;
  now?: () => number;
  /**
   * The takedown blocklist, chosen by the caller (the tree's file, or the bucket's
   * object); by default, for an ImageStore only, the tree's own file, watched
   * (server/takedown/blocklistStore.ts).
   */
  blocklist?: BlocklistWatcher;
}

export function createFetchingImageService(deps: FetchingServiceDependencies): ImageService {
  const { config, engine } = deps;
  const store = deps.store instanceof ImageStore ? treeBackend(deps.store) : deps.store;
  const blocklist = deps.blocklist ?? (deps.store instanceof ImageStore ? watchBlocklist(deps.store.root, { extraHosts: config.blockedHosts }) : null);
  if (blocklist === null) throw new Error('an image service over a bucket needs its blocklist watcher');
  const takedown = createTakedownCheck(blocklist);
  const context = createMissContext({
    config,
    store,
    logger: deps.logger,
    metrics: deps.metrics ?? createMetrics({ processMetrics: false }),
    now: deps.now ?? Date.now,
    takedown,
  });
  const originals = createOriginalFlights(context, deps.fetcher);
  const variants = createVariantFlights(context, engine, originals);

  return {
    async get(request: ImageRequest): Promise<ImageAnswer> {
      const { bucket } = request.link;
      const label = variantLabelOf(request);
      // Before the lookup: a file a takedown left behind is never served by the app.
      const checked = await takedown.refuse({ key: request.key, host: request.imageUrl.hostname });
      const likely = likelyExtension(request.imageUrl);
      // Only thumbnails are negotiated: full-size and /proxy links keep the origin's bytes.
      const negotiated = label !== null && !request.link.proxy && config.formats.length > 0;
      const chosen = label !== null && !request.link.proxy ? request.formatClass : undefined;
      const formatClass = chosen ?? (negotiated ? formatClassOf(request.accept, config.formats) : 'source');
      if (label !== null && formatClass !== 'source') {
        const found = await store.findClassVariant(bucket, request.key, label, formatClass);
        if (found !== null) return { kind: 'stored', image: found, cache: 'hit', negotiated };
      }
      const stored = await store.find(bucket, request.key, label, likely);
      if (stored !== null && formatClass === 'source') return { kind: 'stored', image: stored, cache: 'hit', ...(negotiated ? { negotiated } : {}) };
      try {
        if (request.link.proxy) {
          const image = await originals.passThrough(request);
          return { kind: 'passthrough', bytes: image.bytes, contentType: FORMAT_INFO[image.format].contentType };
        }
        if (label === null) {
          const flight = originals.ensure(request, true);
          const image = await flight.stored;
          // The prepared bytes are what was written, unless another process (or, for a
          // bucket, another node) stored it first: then its object is answered.
          const prepared = await flight.image;
          const written = prepared !== null && (image.object === undefined || image.object.sha256 === (prepared.sha256 ?? null));
          return { kind: 'stored', image, cache: 'miss', ...(written ? { content: prepared.bytes } : {}) };
        }
        // The original looked up once, here; the thumbnail's flight is handed what was found.
        const original = stored === null ? await store.find(bucket, request.key, null, likely) : null;
        const cache = stored !== null || original !== null ? 'variant' : 'miss';
        if (formatClass !== 'source') {
          const made = await variants.makeClass(request, label, formatClass, original, stored, checked);
          return { kind: 'stored', image: made.image, content: made.content, cache, negotiated, ...(made.provisional ? { provisional: true } : {}) };
        }
        const made = await variants.make(request, label, original, checked);
        return { kind: 'stored', image: made.image, content: made.content, cache, ...(negotiated ? { negotiated } : {}) };
      } catch (thrown) {
        // Lock directories and writes outside a fetch step fail on a full or read-only disk too.
        throw await context.asStorageError(thrown, request);
      }
    },
    openStored: (image, options) => store.openImage(image, options),
    queueDepths: () => ({ fetch: originals.queueDepth(), resize: variants.queueDepth() }),
    close: () => engine.close(),
  };
}
