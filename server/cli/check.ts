/**
 * `imageproxy check [--bucket b] [--repair] [--decode] [--json]`: walks the tree
 * (server/tree/healthWalk.ts) and reports, or with --repair fixes, every stale temp file,
 * stale lock, original without a sidecar and damaged original or thumbnail; --decode
 * also decodes every image. One line per finding as it is found, a summary by kind at
 * the end; progress by shard directory on stderr.
 */
import type { Command } from 'commander';
import { FINDING_KINDS } from '../tree/health.js';
import { walkTreeHealth, type FindingReport, type TreeHealthResult } from '../tree/healthWalk.js';
import { walkBucketHealth } from '../stats/bucketCheckWalk.js';
import { EXIT_FAILURES, EXIT_INTERRUPTED, EXIT_OK, withCommon, type CommonOptions } from './common.js';
import { runShardWalk, shardWalkTarget } from './shardWalk.js';
import { withBucket } from './storageTarget.js';

interface CheckOptions extends CommonOptions {
  bucket?: string;
  repair?: boolean;
  decode?: boolean;
  json?: boolean;
}

const LABEL = 'check';

function findingLine(report: FindingReport): string {
  const repair = report.repair === null ? '' : `\t${report.repair}: ${report.repairDetail ?? ''}`;
  return `${report.kind}\t${report.relativePath}\t${report.detail}${repair}\n`;
}

function summaryLines(result: TreeHealthResult, repair: boolean): string {
  const total = FINDING_KINDS.reduce((sum, kind) => sum + result.found[kind], 0);
  const byKind = FINDING_KINDS.map((kind) => `${kind} ${result.found[kind]}`).join(', ');
  const head = result.complete ? '' : 'INTERRUPTED: the figures below cover only the part of the tree walked\n';
  const repairs = repair ? `; repaired ${result.repaired}, repair failed ${result.repairFailed}` : '';
  return `${head}findings ${total}: ${byKind}${repairs}\n`;
}

async function check(options: CheckOptions): Promise<number> {
  const { config, buckets, root } = shardWalkTarget(options, LABEL);
  const repair = options.repair === true;
  const json = options.json === true;
  const common = {
    buckets,
    maxImageBytes: config.limits.maxBytes,
    repair,
    decode: options.decode === true,
    onFinding: (report: FindingReport) => process.stdout.write(json ? `${JSON.stringify(report)}\n` : findingLine(report)),
  };
  const report = (result: TreeHealthResult): number => {
    process.stdout.write(
      json
        ? `${JSON.stringify({ summary: { complete: result.complete, found: result.found, repaired: result.repaired, repairFailed: result.repairFailed } })}\n`
        : summaryLines(result, repair),
    );
    if (!result.complete) return EXIT_INTERRUPTED;
    const total = FINDING_KINDS.reduce((sum, kind) => sum + result.found[kind], 0);
    if (repair) return result.repairFailed > 0 ? EXIT_FAILURES : EXIT_OK;
    return total > 0 ? EXIT_FAILURES : EXIT_OK;
  };
  if (config.storage.type === 's3') {
    return withBucket(LABEL, config, ({ store }) => runShardWalk(LABEL, buckets.length, (hooks) => walkBucketHealth({ store, ...common, ...hooks }), report));
  }
  return runShardWalk(LABEL, buckets.length, (hooks) => walkTreeHealth({ root, tempMaxAgeMs: config.tempMaxAgeSeconds * 1000, ...common, ...hooks }), report);
}

export function register(program: Command): void {
  withCommon(
    program
      .command('check')
      .description('find (and with --repair fix) crash leftovers and damaged files in the tree')
      .addHelpText(
        'after',
        `
Findings, one line each on stdout (kind, path below the root, detail; with --repair the
outcome): stale-temp (temp file of a process gone from this host, or older than
tempMaxAgeSeconds), stale-lock (lock directory not refreshed for 10 s), missing-sidecar
(original without a readable {key}.json: rebuilt from the bytes, sourceUrl null),
damaged-original (empty, not its extension's format, size other than its sidecar's, or
with --decode not decodable), damaged-thumbnail (empty, not its format, not decodable,
size other than its record's). Thumbnails include the files made for format classes,
{key}.{label}.{avif|webp}.{ext}, each judged by its own record in the sidecar; one that is
a hard link of the source-format thumbnail is a thumbnail like the others, and goes with
it when it is damaged (one file, one damage).
Damaged files are moved to {root}/.imageproxy/quarantine/{bucket}/ and fetched or made
again on the next request; a damaged original's thumbnails are removed with it.
Safe beside a running server. Progress (stderr) counts shard directories, 4096 per bucket.
With storage.type "s3": every image object is read whole and judged against its
metadata (sha256, facts) and its Content-Type (damaged-original, damaged-thumbnail);
--repair deletes a damaged object, made again on the next request.

Exit codes: 0 nothing found (or everything repaired); 1 findings without --repair, or a
repair failed; 2 usage or config error; 130 interrupted (Ctrl-C): the summary covers
what was walked and says so.`,
      ),
  )
    .option('--bucket <bucket>', 'only this bucket (default: every configured bucket)')
    .option('--repair', 'fix what is found (remove, rebuild, move aside)')
    .option('--decode', 'also decode every image with sharp (reads every byte; slow)')
    .option('--json', 'one JSON object per finding, then one summary object')
    .action(async (options: CheckOptions) => {
      process.exitCode = await check(options);
    });
}
