/**
 * The walk both storages' statistics share (server/stats/treeStatsWalk.ts,
 * bucketStatsWalk.ts): the blocklist counted first, then each bucket's entries in shard
 * order, a shard's images measured together once the shard is whole, an abort honoured
 * between shards, and the figures in the form of server/stats/treeStats.ts. Where the
 * entries come from and how an image is measured are the storage's.
 */
import { SHARDS_PER_BUCKET, type TreeFileKind } from '../contract/layout.js';
import type { Blocklist } from '../takedown/blocklist.js';
import { addTreeFile, countBlocked, emptyBucketStats, emptyFormatFigures, type BucketStats, type FormatFigures, type TreeStats } from './treeStats.js';

/** One entry of a bucket: an image to measure with its shard, or anything else, counted by its kind. */
type StatsEntry<Pending> = { shard: string; image: Pending } | { shard: string; other: Exclude<TreeFileKind, 'original' | 'thumbnail'> };

/** What a storage gives the walk. */
export interface StatsSource<Pending> {
  /** What the report names as the root (a directory, `s3://bucket/prefix/`). */
  root: string;
  /** The blocklist, read before the walk: an interrupted walk still reports it whole. */
  readBlocklist(): Promise<Blocklist>;
  /** A bucket's entries, a shard's together. */
  entries(bucket: string): AsyncIterable<StatsEntry<Pending>>;
  /** Adds one shard's images to the bucket's figures (an image gone meanwhile is not counted). */
  measure(totals: BucketStats, formats: FormatFigures, images: Pending[]): Promise<void>;
}

export interface StatsWalkOptions {
  buckets: readonly string[];
  /** Aborted: stop after the current shard; the result says `complete: false`. */
  signal?: AbortSignal;
  /** After each shard that held entries. */
  onShardDone?: (bucket: string) => void;
  /** After each bucket, with how many of its shards held entries. */
  onBucketDone?: (bucket: string, shardsWithEntries: number) => void;
  now?: () => number;
}

export async function walkStats<Pending>(source: StatsSource<Pending>, options: StatsWalkOptions): Promise<TreeStats> {
  const now = options.now ?? Date.now;
  const startedMs = now();
  const buckets: Record<string, BucketStats> = {};
  const formats: Record<string, FormatFigures> = {};
  let shardsWalked = 0;
  let interrupted = false;
  const aborted = (): boolean => options.signal?.aborted === true;

  let blocked: TreeStats['blocked'] = null;
  let blockedError: string | null = null;
  try {
    blocked = countBlocked((await source.readBlocklist()).entries);
  } catch (error) {
    blockedError = (error as Error).message;
  }

  for (const bucket of options.buckets) {
    if (aborted()) {
      interrupted = true;
      break;
    }
    const totals = emptyBucketStats();
    buckets[bucket] = totals;
    const figures = emptyFormatFigures();
    formats[bucket] = figures;
    let shard: string | null = null;
    let shardsWithEntries = 0;
    let images: Pending[] = [];
    const finishShard = async (): Promise<void> => {
      await source.measure(totals, figures, images);
      images = [];
      shardsWithEntries += 1;
      options.onShardDone?.(bucket);
    };

    for await (const entry of source.entries(bucket)) {
      if (entry.shard !== shard) {
        if (shard !== null) await finishShard();
        shard = entry.shard;
        if (aborted()) {
          interrupted = true;
          shard = null;
          break;
        }
      }
      if ('image' in entry) images.push(entry.image);
      else addTreeFile(totals, { kind: entry.other });
    }
    if (shard !== null) await finishShard();
    shardsWalked += interrupted ? shardsWithEntries : SHARDS_PER_BUCKET;
    if (interrupted) break;
    options.onBucketDone?.(bucket, Math.min(shardsWithEntries, SHARDS_PER_BUCKET));
  }

  return {
    complete: !interrupted,
    root: source.root,
    buckets,
    formats,
    blocked,
    blockedError,
    shardsWalked,
    shardsTotal: options.buckets.length * SHARDS_PER_BUCKET,
    startedMs,
    durationMs: now() - startedMs,
  };
}
