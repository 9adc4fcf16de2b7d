/**
 * The frame of a command that walks every shard directory of some buckets (`stats`,
 * `check`): one progress step per shard (those without entries count as skipped, so the
 * ETA holds), SIGINT/SIGTERM as an interrupt, the progress summary on stderr, and a
 * failure as one line on stderr and exit 1.
 */
import { resolve } from 'node:path';
import type { Config } from '../config/config.js';
import { SHARDS_PER_BUCKET } from '../contract/layout.js';
import { EXIT_FAILURES, configuredBucket, loadConfig, type CommonOptions, type StorageUse } from './common.js';
import { ProgressReporter, interruptOnSignals } from './progress.js';
import { gatewayFailureOf } from './storageTarget.js';

/** What the walk is given: the interrupt, and where it reports each shard and bucket done. */
export interface ShardWalkHooks {
  signal: AbortSignal;
  onShardDone: () => void;
  onBucketDone: (bucket: string, shardsWithEntries: number) => void;
}

/** The config, the buckets to walk (--bucket, else every configured one) and the tree's root. */
export function shardWalkTarget(options: CommonOptions & { bucket?: string }, storageUse: StorageUse): { config: Config; buckets: string[]; root: string } {
  const config = loadConfig(options, {}, storageUse);
  const buckets = options.bucket === undefined ? Object.keys(config.buckets) : [configuredBucket(config, '--bucket', options.bucket)];
  return { config, buckets, root: resolve(config.root) };
}

/** Runs `walk` over `bucketCount` buckets; `report` prints its result and gives the exit code. */
export async function runShardWalk<R extends { complete: boolean }>(
  label: string,
  bucketCount: number,
  walk: (hooks: ShardWalkHooks) => Promise<R>,
  report: (result: R) => number,
): Promise<number> {
  const interrupt = interruptOnSignals(label);
  // Each step is a shard directory (ok: it held entries; skipped: empty), not an entry.
  const progress = new ProgressReporter({ label, total: bucketCount * SHARDS_PER_BUCKET, unit: 'shard directories' });
  try {
    const result = await walk({
      signal: interrupt.signal,
      onShardDone: () => progress.tick('ok'),
      onBucketDone: (_bucket, shardsWithEntries) => {
        for (let shard = shardsWithEntries; shard < SHARDS_PER_BUCKET; shard += 1) progress.tick('skipped');
      },
    });
    progress.stop();
    process.stderr.write(`${progress.summary(!result.complete)}\n`);
    return report(result);
  } catch (error) {
    progress.stop();
    // The gateway's failure is said by the caller (server/cli/storageTarget.ts), with its own exit code.
    if (gatewayFailureOf(error) !== null) throw error;
    process.stderr.write(`imageproxy: ${label}: ${(error as Error).message}\n`);
    return EXIT_FAILURES;
  } finally {
    interrupt.dispose();
  }
}
