/**
 * Gathers the statistics of a bucket tree from disk: a streaming walk of each bucket
 * (server/tree/walk.ts), every name classified (layout.classifyTreeFile), and one lstat
 * per image for its size, mtime and inode (hard links within a directory counted once). Read-only, so safe to run beside the server and to
 * interrupt at any point. Used by `imageproxy stats` and by the server's gauges.
 */
import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { readBlocklist } from '../takedown/blocklistStore.js';
import { SHARDS_PER_BUCKET, classifyTreeFile, type TreeFileKind } from '../contract/layout.js';
import {
  addFormatFile,
  addTreeFile,
  countBlocked,
  emptyBucketStats,
  emptyFormatFigures,
  linkedThumbnailNames,
  type BucketStats,
  type FormatFigures,
  type TreeFileFacts,
  type TreeStats,
} from './treeStats.js';
import { walkShardFiles } from '../tree/walk.js';


export interface TreeStatsWalkOptions {
  root: string;
  buckets: readonly string[];
  /** Aborted: stop after the current shard directory; the result says `complete: false`. */
  signal?: AbortSignal;
  /** After each shard directory that held files. */
  onShardDone?: (bucket: string) => void;
  /** After each bucket, with how many of its shard directories held files. */
  onBucketDone?: (bucket: string, shardsWithFiles: number) => void;
  /** Each bucket or shard directory not walked because it is a symbolic link (server/tree/walk.ts), by absolute path. */
  onSkippedDirectory?: (path: string, what: string) => void;
  now?: () => number;
}

interface PendingImage {
  kind: TreeFileKind;
  name: string;
  path: string;
}

/**
 * Sizes and mtimes of one shard's images, looked up together: a shard holds few files,
 * and lstat calls in flight overlap their waits on the disk. A file gone in between (a
 * purge, a replaced thumbnail) is not counted. Thumbnails that share an inode (a format
 * class's hard link of the source-format thumbnail) have their bytes counted once.
 */
async function addImages(totals: BucketStats, formats: FormatFigures, images: PendingImage[]): Promise<void> {
  const facts = await Promise.all(
    images.map(async (image) => {
      try {
        // bigint: an inode number may not fit a double.
        const info = await lstat(image.path, { bigint: true });
        return { kind: image.kind, name: image.name, bytes: Number(info.size), modifiedMs: Number(info.mtimeMs), identity: `${info.dev}:${info.ino}` };
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
        throw error;
      }
    }),
  );
  const present = facts.filter((fact) => fact !== null);
  const linked = linkedThumbnailNames(present.filter((fact) => fact.kind === 'thumbnail'));
  for (const fact of present) {
    const file: TreeFileFacts = { kind: fact.kind, name: fact.name, bytes: fact.bytes, modifiedMs: fact.modifiedMs, linked: linked.has(fact.name) };
    addTreeFile(totals, file);
    addFormatFile(formats, file);
  }
}

export async function walkTreeStats(options: TreeStatsWalkOptions): Promise<TreeStats> {
  const now = options.now ?? Date.now;
  const startedMs = now();
  const buckets: Record<string, BucketStats> = {};
  const formats: Record<string, FormatFigures> = {};
  let shardsWalked = 0;
  let interrupted = false;
  const aborted = (): boolean => options.signal?.aborted === true;

  // Before the walk: one small file, and an interrupted walk still reports it whole.
  let blocked: TreeStats['blocked'] = null;
  let blockedError: string | null = null;
  try {
    blocked = countBlocked((await readBlocklist(options.root)).entries);
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
    let shardsWithFiles = 0;
    let images: PendingImage[] = [];
    const finishShard = async (): Promise<void> => {
      await addImages(totals, figures, images);
      images = [];
      shardsWithFiles += 1;
      options.onShardDone?.(bucket);
    };

    const walkOptions = options.onSkippedDirectory === undefined ? {} : { onSkippedDirectory: options.onSkippedDirectory };
    for await (const file of walkShardFiles(join(options.root, bucket), walkOptions)) {
      if (file.shard !== shard) {
        if (shard !== null) await finishShard();
        shard = file.shard;
        if (aborted()) {
          interrupted = true;
          shard = null;
          break;
        }
      }
      const kind = classifyTreeFile(file.name);
      if (kind === 'original' || kind === 'thumbnail') images.push({ kind, name: file.name, path: join(file.directory, file.name) });
      else addTreeFile(totals, { kind });
    }
    if (shard !== null) await finishShard();
    shardsWalked += interrupted ? shardsWithFiles : SHARDS_PER_BUCKET;
    if (interrupted) break;
    options.onBucketDone?.(bucket, shardsWithFiles);
  }

  return {
    complete: !interrupted,
    root: options.root,
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
