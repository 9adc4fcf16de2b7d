/**
 * `imageproxy stats [--bucket b] [--json]`: per bucket, originals, thumbnails, bytes,
 * backoff records and the oldest and newest fetch; images by format (thumbnails by class
 * and type, originals by type); the blocklist by kind. A full,
 * read-only walk of the tree (server/stats/treeStatsWalk.ts); progress by shard directory.
 */
import type { Command } from 'commander';
import { relative } from 'node:path';
import { formatStatsJson, formatStatsTable } from '../stats/treeStats.js';
import { walkTreeStats } from '../stats/treeStatsWalk.js';
import { walkBucketStats } from '../stats/bucketStatsWalk.js';
import type { TreeStats } from '../stats/treeStats.js';
import { EXIT_INTERRUPTED, EXIT_OK, withCommon, type CommonOptions } from './common.js';
import { runShardWalk, shardWalkTarget } from './shardWalk.js';
import { withBucket } from './storageTarget.js';

interface StatsOptions extends CommonOptions {
  bucket?: string;
  json?: boolean;
}

const LABEL = 'stats';

async function stats(options: StatsOptions): Promise<number> {
  const { config, buckets, root } = shardWalkTarget(options, LABEL);
  const report = (result: TreeStats): number => {
    process.stdout.write(options.json === true ? formatStatsJson(result) : formatStatsTable(result));
    return result.complete ? EXIT_OK : EXIT_INTERRUPTED;
  };
  if (config.storage.type === 's3') {
    return withBucket(LABEL, config, ({ store, where }) => runShardWalk(LABEL, buckets.length, (hooks) => walkBucketStats({ store, where, buckets, ...hooks }), report));
  }

  return runShardWalk(
    LABEL,
    buckets.length,
    (hooks) =>
      walkTreeStats({
        root,
        buckets,
        ...hooks,
        // Not counted, and said so: a link is never followed out of the tree.
        onSkippedDirectory: (path, what) => process.stderr.write(`${LABEL}: ${relative(root, path)}: ${what}, not walked\n`),
      }),
    report,
  );
}

export function register(program: Command): void {
  withCommon(
    program
      .command('stats')
      .description('count what the tree holds, per bucket: originals, thumbnails, bytes, backoff records, oldest and newest fetch; images by format')
      .addHelpText(
        'after',
        `
A read-only walk of every file of the tree; safe beside a running server and to run twice.
With storage.type "s3": a listing of the bucket and one HEAD per image (its type, an
original's fetch time); a bucket has no sidecars, backoff records, temp files or links.
Progress (stderr) counts shard directories, 4096 per bucket; "skipped" ones are empty.

By format (lines under the table; JSON "formats", per bucket and in total): thumbnails
by class (source {key}.{label}.{ext}; avif and webp {key}.{label}.{format}.{ext}, made for
clients that accept the format) and by file type, originals by file type. A thumbnail
that is a hard link of another in its directory (same inode: a class file where
converting did not pay) counts as a file of its class, its bytes once, under the
source-format thumbnail ("hard-linked"; JSON "linked"); bytes are what the disk holds.

Exit codes: 0 done; 1 the tree could not be read; 2 usage or config error;
130 interrupted (Ctrl-C): the figures printed are partial and say so
(text: an INTERRUPTED line first; JSON: "complete": false).`,
      ),
  )
    .option('--bucket <bucket>', 'only this bucket (default: every configured bucket)')
    .option('--json', 'print one JSON object instead of the table')
    .action(async (options: StatsOptions) => {
      process.exitCode = await stats(options);
    });
}
