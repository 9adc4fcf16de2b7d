/**
 * Keeps the tree gauges fresh: one walk at start, then one `statsRefreshSeconds` after
 * the previous walk ended, so walks never overlap however long one takes. Scrapes read
 * the gauges as the last walk left them and never walk. Errors are logged, never thrown:
 * a tree the walk cannot read must not take the server down.
 */
import type { Logger } from '../observe/log.js';
import type { TreeGauges } from '../observe/metrics.js';
import { BLOCK_KINDS } from '../takedown/blocklist.js';
import type { FileFigures, FormatFigures, TreeStats } from './treeStats.js';
import { walkTreeStats } from './treeStatsWalk.js';
import { repeatPass } from '../tree/repeatingPass.js';

export interface TreeStatsRefreshOptions {
  root: string;
  buckets: readonly string[];
  /** Pause between the end of one walk and the start of the next; 0: never walk. */
  intervalSeconds: number;
  gauges: TreeGauges;
  logger: Logger;
}

export interface TreeStatsRefresh {
  /** Stops the schedule and a walk in progress (its figures are dropped). */
  stop(): Promise<void>;
}

export function startTreeStatsRefresh(options: TreeStatsRefreshOptions): TreeStatsRefresh {
  const walkOnce = async (signal: AbortSignal): Promise<void> => {
    try {
      const stats = await walkTreeStats({ root: options.root, buckets: options.buckets, signal });
      if (!stats.complete) return;
      recordTreeStats(options.gauges, stats);
      if (stats.blockedError !== null) options.logger.warn({ detail: stats.blockedError }, 'tree statistics: blocklist unreadable');
      options.logger.debug({ durationMs: stats.durationMs, shards: stats.shardsWalked }, 'tree statistics refreshed');
    } catch (error) {
      options.logger.error({ err: error }, 'tree statistics walk failed');
    }
  };
  return repeatPass(options.intervalSeconds, walkOnce);
}

/** Sets the tree gauges from a complete walk, replacing the previous walk's values. */
function recordTreeStats(gauges: TreeGauges, stats: TreeStats): void {
  for (const gauge of [gauges.files, gauges.bytes, gauges.backoffFiles, gauges.oldestFetch, gauges.newestFetch, gauges.blockedEntries]) {
    gauge.reset();
  }
  for (const gauge of [gauges.thumbnailClassFiles, gauges.thumbnailClassBytes, gauges.typeFiles, gauges.typeBytes]) gauge.reset();
  for (const [bucket, figures] of Object.entries(stats.buckets)) {
    gauges.files.set({ bucket, kind: 'original' }, figures.originals);
    gauges.files.set({ bucket, kind: 'thumbnail' }, figures.thumbnails);
    gauges.files.set({ bucket, kind: 'sidecar' }, figures.sidecars);
    gauges.files.set({ bucket, kind: 'temp' }, figures.temp);
    gauges.files.set({ bucket, kind: 'other' }, figures.other);
    gauges.bytes.set({ bucket, kind: 'original' }, figures.originalBytes);
    gauges.bytes.set({ bucket, kind: 'thumbnail' }, figures.thumbnailBytes);
    gauges.backoffFiles.set({ bucket }, figures.backoff);
    if (figures.oldestFetchMs !== null) gauges.oldestFetch.set({ bucket }, figures.oldestFetchMs / 1000);
    if (figures.newestFetchMs !== null) gauges.newestFetch.set({ bucket }, figures.newestFetchMs / 1000);
  }
  for (const [bucket, figures] of Object.entries(stats.formats)) recordFormatFigures(gauges, bucket, figures);
  if (stats.blocked !== null) {
    for (const kind of BLOCK_KINDS) gauges.blockedEntries.set({ kind }, stats.blocked[kind]);
  }
  gauges.scanTimestamp.set(stats.startedMs / 1000);
  gauges.scanDuration.set(stats.durationMs / 1000);
}

/** One bucket's images by format: thumbnails by class, originals and thumbnails by file type. */
function recordFormatFigures(gauges: TreeGauges, bucket: string, figures: FormatFigures): void {
  for (const [formatClass, each] of Object.entries(figures.thumbnailsByClass)) {
    gauges.thumbnailClassFiles.set({ bucket, class: formatClass }, each.files);
    gauges.thumbnailClassBytes.set({ bucket, class: formatClass }, each.bytes);
  }
  const byType = (kind: 'original' | 'thumbnail', types: Record<string, FileFigures>): void => {
    for (const [type, each] of Object.entries(types)) {
      gauges.typeFiles.set({ bucket, kind, type }, each.files);
      gauges.typeBytes.set({ bucket, kind, type }, each.bytes);
    }
  };
  byType('original', figures.originalsByType);
  byType('thumbnail', figures.thumbnailsByType);
}
