/**
 * Prometheus metrics (prom-client), one registry per server so tests can run several in
 * one process. Served only on the admin listener (`admin.listen`, server/http/admin.ts):
 * the public app has no metrics route in any spelling.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface Metrics {
  registry: Registry;
  /**
   * Every answer to a link, by bucket and outcome: `hit` (the file asked for was stored),
   * `variant` (only its original was: the thumbnail was made now), `miss` (nothing was:
   * the original was fetched now), `passthrough`, or the error code.
   */
  responses: Counter<'outcome' | 'bucket'>;
  /** Work waiting or running, by queue, read from the registered sources at each scrape. */
  queueDepth: Gauge<'queue'>;
  /** Registers where a queue's depth is read (replacing an earlier source of that name). */
  setQueueDepthSource(queue: string, read: () => number): void;
  fetches: Counter<'result'>;
  fetchSeconds: Histogram;
  fetchedBytes: Counter;
  resizes: Counter<'engine' | 'result'>;
  resizeSeconds: Histogram<'engine'>;
  /** Stored files found damaged and moved aside, by who found them (`lookup`, `heal`) and kind (`original`, `thumbnail`). */
  damagedFiles: Counter<'found_by' | 'kind'>;
  tree: TreeGauges;
}

/**
 * The tree's figures as of the last background walk (server/stats/treeStatsRefresh.ts), the
 * same as `imageproxy stats` prints. Set only when a walk completes: a scrape never walks.
 */
export interface TreeGauges {
  files: Gauge<'bucket' | 'kind'>;
  bytes: Gauge<'bucket' | 'kind'>;
  backoffFiles: Gauge<'bucket'>;
  oldestFetch: Gauge<'bucket'>;
  newestFetch: Gauge<'bucket'>;
  blockedEntries: Gauge<'kind'>;
  scanTimestamp: Gauge;
  scanDuration: Gauge;
}

export function createMetrics(options: { processMetrics: boolean }): Metrics {
  const registry = new Registry();
  // Process metrics include the event-loop lag (imageproxy_nodejs_eventloop_lag_*).
  if (options.processMetrics) collectDefaultMetrics({ register: registry, prefix: 'imageproxy_' });
  const queueSources = new Map<string, () => number>();
  return {
    registry,
    responses: new Counter({
      name: 'imageproxy_responses_total',
      help: 'Answers to image links, by bucket and outcome (hit, variant, miss, passthrough, or the error code)',
      labelNames: ['outcome', 'bucket'] as const,
      registers: [registry],
    }),
    queueDepth: new Gauge({
      name: 'imageproxy_queue_depth',
      help: 'Work waiting or running, by queue (requests: link requests in progress; fetch: origin fetches running or waiting; resize: thumbnails queued or being made)',
      labelNames: ['queue'] as const,
      registers: [registry],
      collect() {
        for (const [queue, read] of queueSources) this.set({ queue }, read());
      },
    }),
    setQueueDepthSource(queue, read) {
      queueSources.set(queue, read);
    },
    fetches: new Counter({
      name: 'imageproxy_origin_fetches_total',
      help: 'Fetches from origins, by result (ok, or the error code)',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    fetchSeconds: new Histogram({
      name: 'imageproxy_origin_fetch_seconds',
      help: 'Time to fetch and check an original',
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    fetchedBytes: new Counter({
      name: 'imageproxy_origin_fetched_bytes_total',
      help: 'Bytes of images accepted from origins',
      registers: [registry],
    }),
    resizes: new Counter({
      name: 'imageproxy_resizes_total',
      help: 'Thumbnails made, by engine and result (ok, or the error code)',
      labelNames: ['engine', 'result'] as const,
      registers: [registry],
    }),
    resizeSeconds: new Histogram({
      name: 'imageproxy_resize_seconds',
      help: 'Time to make one thumbnail',
      labelNames: ['engine'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    damagedFiles: new Counter({
      name: 'imageproxy_damaged_files_total',
      help: 'Stored files found damaged and moved aside (fetched or made again on the next request), by finder (lookup, heal) and kind (original, thumbnail)',
      labelNames: ['found_by', 'kind'] as const,
      registers: [registry],
    }),
    tree: createTreeGauges(registry),
  };
}

function createTreeGauges(registry: Registry): TreeGauges {
  return {
    files: new Gauge({
      name: 'imageproxy_tree_files',
      help: 'Files in the tree at the last walk, by bucket and kind (original, thumbnail, sidecar, temp, other)',
      labelNames: ['bucket', 'kind'] as const,
      registers: [registry],
    }),
    bytes: new Gauge({
      name: 'imageproxy_tree_bytes',
      help: 'Bytes of images in the tree at the last walk, by bucket and kind (original, thumbnail)',
      labelNames: ['bucket', 'kind'] as const,
      registers: [registry],
    }),
    backoffFiles: new Gauge({
      name: 'imageproxy_tree_backoff_files',
      help: 'Backoff records (.fail files) in the tree at the last walk, by bucket',
      labelNames: ['bucket'] as const,
      registers: [registry],
    }),
    oldestFetch: new Gauge({
      name: 'imageproxy_tree_oldest_fetch_timestamp_seconds',
      help: 'mtime of the oldest original at the last walk, by bucket (absent when the bucket has none)',
      labelNames: ['bucket'] as const,
      registers: [registry],
    }),
    newestFetch: new Gauge({
      name: 'imageproxy_tree_newest_fetch_timestamp_seconds',
      help: 'mtime of the newest original at the last walk, by bucket (absent when the bucket has none)',
      labelNames: ['bucket'] as const,
      registers: [registry],
    }),
    blockedEntries: new Gauge({
      name: 'imageproxy_tree_blocked_entries',
      help: 'Blocklist entries at the last walk, by kind (key, digest, host)',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
    scanTimestamp: new Gauge({
      name: 'imageproxy_tree_scan_timestamp_seconds',
      help: 'When the last complete walk of the tree started (the tree_* gauges are from it)',
      registers: [registry],
    }),
    scanDuration: new Gauge({
      name: 'imageproxy_tree_scan_duration_seconds',
      help: 'How long the last complete walk of the tree took',
      registers: [registry],
    }),
  };
}
