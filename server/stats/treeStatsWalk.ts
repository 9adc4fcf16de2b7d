/**
 * Gathers the statistics of a bucket tree from disk: a streaming walk of each bucket
 * (server/tree/walk.ts), every name classified (layout.classifyTreeFile), and one lstat
 * per image for its size, mtime and inode (hard links within a directory counted once). Read-only, so safe to run beside the server and to
 * interrupt at any point. Used by `imageproxy stats` and by the server's gauges.
 */
import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { readBlocklist } from '../takedown/blocklistStore.js';
import { classifyTreeFile } from '../contract/layout.js';
import { walkStats, type StatsWalkOptions } from './statsWalk.js';
import {
  addFormatFile,
  addTreeFile,
  linkedThumbnailNames,
  type BucketStats,
  type FormatFigures,
  type TreeFileFacts,
  type TreeStats,
} from './treeStats.js';
import { walkShardFiles } from '../tree/walk.js';


export interface TreeStatsWalkOptions extends StatsWalkOptions {
  root: string;
  /** Each bucket or shard directory not walked because it is a symbolic link (server/tree/walk.ts), by absolute path. */
  onSkippedDirectory?: (path: string, what: string) => void;
}

interface PendingImage {
  kind: 'original' | 'thumbnail';
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
  const walkOptions = options.onSkippedDirectory === undefined ? {} : { onSkippedDirectory: options.onSkippedDirectory };
  return walkStats<PendingImage>(
    {
      root: options.root,
      readBlocklist: () => readBlocklist(options.root),
      async *entries(bucket) {
        for await (const file of walkShardFiles(join(options.root, bucket), walkOptions)) {
          const kind = classifyTreeFile(file.name);
          yield kind === 'original' || kind === 'thumbnail'
            ? { shard: file.shard, image: { kind, name: file.name, path: join(file.directory, file.name) } }
            : { shard: file.shard, other: kind };
        }
      },
      measure: addImages,
    },
    options,
  );
}
