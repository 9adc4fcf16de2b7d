/**
 * What both flights of a miss (server/service/originalFlight.ts, variantFlight.ts) share:
 * the takedown check at each decision, the backoff record around each step that may fail
 * because of the origin or its bytes, and the tree's disk faults in our own codes.
 */
import { AdmissionGate, BUSY_RETRY_AFTER_SECONDS } from '../fetch/admission.js';
import { recordFailure, rememberedFailure } from '../fetch/backoff.js';
import { isBlocked, type Blocklist, type BlockQuery } from '../takedown/blocklist.js';
import type { BlocklistWatcher } from '../takedown/blocklistStore.js';
import type { Config } from '../config/config.js';
import { ImageproxyError, toImageproxyError, type ErrorCode } from '../errors.js';
import type { Logger } from '../observe/log.js';
import { shortUrl, summarizeCause } from '../observe/logFields.js';
import type { Metrics } from '../observe/metrics.js';
import type { ImageBackend } from '../storage/imageBackend.js';
import type { ImageRequest } from './imageService.js';

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

/**
 * A flight's queue (server/fetch/admission.ts): a miss waits for a slot, bounded in count
 * and time, or answers `busy` at once; nothing unbounded piles up in memory.
 */
export function createMissGate(context: Pick<MissContext, 'config' | 'metrics'>, name: 'fetch' | 'resize'): AdmissionGate {
  const { limits } = context.config;
  return new AdmissionGate({
    name,
    maxActive: name === 'fetch' ? limits.maxConcurrentFetches : limits.maxConcurrentResizes,
    maxQueued: name === 'fetch' ? limits.maxQueuedFetches : limits.maxQueuedResizes,
    maxWaitMs: limits.maxQueueWaitMs,
    retryAfterSeconds: BUSY_RETRY_AFTER_SECONDS,
    // Each wait and refusal timed into imageproxy_queue_wait_seconds / _queue_refusals_total.
    observer: context.metrics.queueWaits,
  });
}

/** What a miss is made with; each flight takes the parts it uses. */
export interface MissContext {
  config: Config;
  /** The tree or a bucket (server/storage/imageBackend.ts). */
  store: ImageBackend;
  logger: Logger;
  metrics: Metrics;
  now: () => number;
  takedown: TakedownCheck;
  /** Runs a step that may fail because of the origin or its bytes, recording such failures (see withBackoff). */
  withBackoff<T>(request: ImageRequest, stem: string, step: () => Promise<T>): Promise<T>;
  /** A disk fault of a write below the request's key directory in our codes (ImageBackend.explainWriteFailure). */
  asStorageError(thrown: unknown, request: ImageRequest): Promise<unknown>;
}

/**
 * The takedown blocklist, asked where a decision is made: before anything is served or
 * fetched, before fetched bytes are kept, before a thumbnail made meanwhile is shown.
 */
export interface TakedownCheck {
  /** 451 `blocked` when an operator took this link, host or image down; else the list it was checked against. */
  refuse(query: BlockQuery): Promise<Blocklist>;
  /**
   * The same for a decision made later in a miss that `checked` already cleared: asked
   * again only if the list was reloaded since (the watcher hands out one object per load).
   */
  refuseIfReloaded(checked: Blocklist, query: BlockQuery): Promise<void>;
}

export function createTakedownCheck(blocklist: BlocklistWatcher): TakedownCheck {
  async function refuse(query: BlockQuery): Promise<Blocklist> {
    const list = await blocklist.current();
    const entry = isBlocked(list, query);
    // Not a fetch failure: no backoff record.
    if (entry !== null) throw new ImageproxyError('blocked', 'taken down by the operator', { detail: `blocklist ${entry.kind} ${entry.value}` });
    return list;
  }
  return {
    refuse,
    async refuseIfReloaded(checked, query) {
      if ((await blocklist.current()) !== checked) await refuse(query);
    },
  };
}

export function createMissContext(parts: Omit<MissContext, 'withBackoff' | 'asStorageError'>): MissContext {
  const { config, store, logger, now } = parts;

  const asStorageError = (thrown: unknown, request: ImageRequest): Promise<unknown> =>
    store.explainWriteFailure(thrown, request.link.bucket, request.key);

  async function withBackoff<T>(request: ImageRequest, stem: string, step: () => Promise<T>): Promise<T> {
    const { bucket } = request.link;
    const previous = await store.readFailure(bucket, request.key, stem);
    const remembered = rememberedFailure(previous, now());
    if (remembered !== null) throw remembered;
    try {
      const result = await step();
      // Only a record that was there is removed: a miss without one costs no unlink.
      if (previous !== null) await store.clearFailure(bucket, request.key, stem);
      return result;
    } catch (thrown) {
      const error = toImageproxyError(await asStorageError(thrown, request));
      if (BACKOFF_CODES.has(error.code)) {
        const previous = await store.readFailure(bucket, request.key, stem).catch(() => null);
        const record = recordFailure(previous, { code: error.code, detail: error.detail ?? error.message, message: error.message }, now(), config.backoff);
        // The origin's failure first: a disk that cannot take the record must not hide it.
        logger.warn(
          { code: error.code, detail: error.detail, url: shortUrl(request.imageUrl.href), failures: record.failures, retryAt: new Date(record.retryAtMs).toISOString() },
          'fetch failed; backing off',
        );
        try {
          await store.writeFailure(bucket, request.key, stem, record);
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

  return { ...parts, withBackoff, asStorageError };
}
