/**
 * Prometheus metrics (prom-client), one registry per server so tests can run several in
 * one process. Served only on the admin listener (`admin.listen`, server/http/admin.ts):
 * the public app has no metrics route in any spelling.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { packageVersion } from './packageVersion.js';

/** An answer's labels: its outcome, and its bucket once the link was read. */
interface AnswerLabels {
  outcome: string;
  bucket?: string;
}

/** How a wait for a gate's running slot ended (server/fetch/admission.ts's WaitEnd). */
type QueueWaitEnd = 'admitted' | 'timed_out' | 'left';

/**
 * Request duration from a hit answered in a millisecond to a cold miss of a big photo
 * (a queue wait, a slow origin, a resize) taking tens of seconds.
 */
const REQUEST_SECONDS_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60];
/** Queue wait up to limits.maxQueueWaitMs at its largest (just under 120 s). */
const QUEUE_WAIT_SECONDS_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120];

export interface Metrics {
  registry: Registry;
  /**
   * Every answer to a link, by bucket and outcome: `hit` (the file asked for was stored),
   * `variant` (only its original was: the thumbnail was made now), `miss` (nothing was:
   * the original was fetched now), `passthrough`, or the error code.
   */
  responses: Counter<'outcome' | 'bucket'>;
  /** Seconds from a request's arrival to its answer, by the same outcome as `responses`. */
  requestSeconds: Histogram<'outcome'>;
  /** Counts an answer in `responses` and its duration in `requestSeconds`: the two always agree. */
  countAnswer(labels: AnswerLabels, seconds: number): void;
  /** Waits for a running slot of the fetch or resize gate, including those that timed out or were given up. */
  queueWaitSeconds: Histogram<'queue'>;
  /** `busy` from a gate: `full` (refused at once, no wait recorded) or `timed_out` (its wait recorded too). */
  queueRefusals: Counter<'queue' | 'reason'>;
  /** What the gates (server/fetch/admission.ts, option `observer`) report their waits and refusals to. */
  queueWaits: {
    waitBegins(queue: string): (end: QueueWaitEnd) => void;
    refusedFull(queue: string): void;
  };
  /** 1, labelled with the version, the configured engine and Node's version. */
  buildInfo: Gauge<'version' | 'engine' | 'node'>;
  /** Sets build_info for this engine (again after a reload that changed it). */
  setBuildInfo(engine: string): void;
  /** Work waiting or running, by queue, read from the registered sources at each scrape. */
  queueDepth: Gauge<'queue'>;
  /** Registers where a queue's depth is read (replacing an earlier source of that name). */
  setQueueDepthSource(queue: string, read: () => number): void;
  fetches: Counter<'result'>;
  fetchSeconds: Histogram;
  fetchedBytes: Counter;
  /** By format: `source` (the original's, as before formats), or the format class made (`avif`, `webp`). */
  resizes: Counter<'engine' | 'format' | 'result'>;
  resizeSeconds: Histogram<'engine' | 'format'>;
  /** Image answers of the app by the served file's extension (jpg, png, gif, webp, avif); nginx's own hits are not counted here. */
  servedResponses: Counter<'format'>;
  /** Body bytes of those answers (what the app sent, or nginx sends for an X-Accel-Redirect): 0 for a HEAD or a 304. */
  servedBytes: Counter<'format'>;
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
  /** Thumbnails by the class of clients they serve (source, avif, webp). */
  thumbnailClassFiles: Gauge<'bucket' | 'class'>;
  thumbnailClassBytes: Gauge<'bucket' | 'class'>;
  /** Originals and thumbnails by file type (jpg, png, webp, gif, avif). */
  typeFiles: Gauge<'bucket' | 'kind' | 'type'>;
  typeBytes: Gauge<'bucket' | 'kind' | 'type'>;
  scanTimestamp: Gauge;
  scanDuration: Gauge;
}

export function createMetrics(options: { processMetrics: boolean }): Metrics {
  const registry = new Registry();
  // Process metrics include the event-loop lag (imageproxy_nodejs_eventloop_lag_*).
  if (options.processMetrics) collectDefaultMetrics({ register: registry, prefix: 'imageproxy_' });
  const queueSources = new Map<string, () => number>();
  const responses = new Counter({
    name: 'imageproxy_responses_total',
    help: 'Answers to image links, by bucket and outcome (hit, variant, miss, passthrough, or the error code)',
    labelNames: ['outcome', 'bucket'] as const,
    registers: [registry],
  });
  const requestSeconds = new Histogram({
    name: 'imageproxy_request_duration_seconds',
    help: 'Time from the arrival of a request for a link to its answer, by outcome (as imageproxy_responses_total)',
    labelNames: ['outcome'] as const,
    buckets: REQUEST_SECONDS_BUCKETS,
    registers: [registry],
  });
  const queueWaitSeconds = new Histogram({
    name: 'imageproxy_queue_wait_seconds',
    help: 'Time waited for a running slot, by queue (fetch, resize); waits that timed out (busy) or were given up included',
    labelNames: ['queue'] as const,
    buckets: QUEUE_WAIT_SECONDS_BUCKETS,
    registers: [registry],
  });
  const queueRefusals = new Counter({
    name: 'imageproxy_queue_refusals_total',
    help: 'busy answers of a queue, by queue (fetch, resize) and reason (full: refused at once; timed_out: waited limits.maxQueueWaitMs)',
    labelNames: ['queue', 'reason'] as const,
    registers: [registry],
  });
  const buildInfo = new Gauge({
    name: 'imageproxy_build_info',
    help: 'Always 1: the version of imageproxy, the configured resize engine and the version of Node.js',
    labelNames: ['version', 'engine', 'node'] as const,
    // Every worker of `serve --workers N` reports 1: the cluster's figure is 1, not N.
    aggregator: 'max',
    registers: [registry],
  });
  return {
    registry,
    responses,
    requestSeconds,
    countAnswer(labels, seconds) {
      responses.inc(labels);
      requestSeconds.observe({ outcome: labels.outcome }, seconds);
    },
    queueWaitSeconds,
    queueRefusals,
    queueWaits: {
      waitBegins(queue) {
        const stopTimer = queueWaitSeconds.startTimer({ queue });
        return (end) => {
          stopTimer();
          if (end === 'timed_out') queueRefusals.inc({ queue, reason: 'timed_out' });
        };
      },
      refusedFull(queue) {
        queueRefusals.inc({ queue, reason: 'full' });
      },
    },
    buildInfo,
    setBuildInfo(engine) {
      buildInfo.reset();
      buildInfo.set({ version: packageVersion(), engine, node: process.version }, 1);
    },
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
      help: 'Thumbnails made, by engine, format (source, or the format class made) and result (ok, or the error code)',
      labelNames: ['engine', 'format', 'result'] as const,
      registers: [registry],
    }),
    resizeSeconds: new Histogram({
      name: 'imageproxy_resize_seconds',
      help: 'Time to make one thumbnail, by engine and format (source, or the format class made: avif, webp)',
      labelNames: ['engine', 'format'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    servedResponses: new Counter({
      name: 'imageproxy_served_responses_total',
      help: "Image answers of the app, by the served file's format (jpg, png, gif, webp, avif)",
      labelNames: ['format'] as const,
      registers: [registry],
    }),
    servedBytes: new Counter({
      name: 'imageproxy_served_bytes_total',
      help: "Body bytes of the app's image answers (sent by the app, or by nginx for an X-Accel-Redirect), by the served file's format",
      labelNames: ['format'] as const,
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
  const gauge = <Label extends string>(name: string, help: string, labelNames: readonly Label[]): Gauge<Label> =>
    new Gauge({ name, help, labelNames, registers: [registry] });
  return {
    files: gauge(
      'imageproxy_tree_files',
      'Files in the tree at the last walk, by bucket and kind (original, thumbnail, sidecar, temp, other)',
      ['bucket', 'kind'],
    ),
    bytes: gauge(
      'imageproxy_tree_bytes',
      'Bytes of images in the tree at the last walk, by bucket and kind (original, thumbnail)',
      ['bucket', 'kind'],
    ),
    backoffFiles: gauge(
      'imageproxy_tree_backoff_files',
      'Backoff records (.fail files) in the tree at the last walk, by bucket',
      ['bucket'],
    ),
    oldestFetch: gauge(
      'imageproxy_tree_oldest_fetch_timestamp_seconds',
      'mtime of the oldest original at the last walk, by bucket (absent when the bucket has none)',
      ['bucket'],
    ),
    newestFetch: gauge(
      'imageproxy_tree_newest_fetch_timestamp_seconds',
      'mtime of the newest original at the last walk, by bucket (absent when the bucket has none)',
      ['bucket'],
    ),
    blockedEntries: gauge(
      'imageproxy_tree_blocked_entries',
      'Blocklist entries at the last walk, by kind (key, digest, host)',
      ['kind'],
    ),
    thumbnailClassFiles: gauge(
      'imageproxy_tree_thumbnail_class_files',
      'Thumbnails at the last walk, by bucket and the class of clients they serve (source; avif, webp: made for clients that accept it, hard links of the source-format thumbnail included)',
      ['bucket', 'class'],
    ),
    thumbnailClassBytes: gauge(
      'imageproxy_tree_thumbnail_class_bytes',
      'Bytes of thumbnails at the last walk, by bucket and class; a hard link of another thumbnail of its directory adds no bytes (counted once, under the source-format thumbnail)',
      ['bucket', 'class'],
    ),
    typeFiles: gauge(
      'imageproxy_tree_type_files',
      'Images at the last walk, by bucket, kind (original, thumbnail) and file type (jpg, png, webp, gif, avif)',
      ['bucket', 'kind', 'type'],
    ),
    typeBytes: gauge(
      'imageproxy_tree_type_bytes',
      'Bytes of images at the last walk, by bucket, kind and file type; hard links counted once as in imageproxy_tree_thumbnail_class_bytes',
      ['bucket', 'kind', 'type'],
    ),
    scanTimestamp: gauge(
      'imageproxy_tree_scan_timestamp_seconds',
      'When the last complete walk of the tree started (the tree_* gauges are from it)',
      [],
    ),
    scanDuration: gauge(
      'imageproxy_tree_scan_duration_seconds',
      'How long the last complete walk of the tree took',
      [],
    ),
  };
}
