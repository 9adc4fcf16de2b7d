/**
 * `imageproxy import-legacy <py-root>`: adopts an imageproxy-py tree (server/ops/legacyImport.ts)
 * into the tree, or with `storage.type: "s3"` into the bucket (server/cli/storageTarget.ts
 * opens it), with a progress display, a report file of every entry not imported, and the
 * exit codes of server/cli/common.ts: 1 only for what a rerun might fix (or the gateway
 * gone), so a migration script can tell done from failed.
 */
import { Option, type Command } from 'commander';
import { createWriteStream, type WriteStream } from 'node:fs';
import { lstat, mkdir, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { Config } from '../config/config.js';
import type { ImageproxyError } from '../errors.js';
import { createS3Backend } from '../storage/s3Backend.js';
import { isBlocked, withConfigHosts, type Blocklist } from '../takedown/blocklist.js';
import { readBlocklist } from '../takedown/blocklistStore.js';
import { readBucketBlocklist } from '../takedown/bucketBlocklist.js';
import { STATE_DIRECTORY } from '../contract/layout.js';
import {
  countLegacyEntries,
  importLegacyTree,
  sameFilesystem,
  type BlockCandidate,
  type ImportMode,
  type ImportOptions,
  type ImportTarget,
} from '../ops/legacyImport.js';
import {
  LEGACY_FAILURE_REASONS,
  LEGACY_WARNING_REASONS,
  REPORT_HEADER,
  defaultReportName,
  formatReportLine,
} from '../ops/legacyTree.js';
import { prepareOriginal } from '../tree/originals.js';
import { ImageStore } from '../tree/store.js';
import {
  EXIT_FAILURES,
  EXIT_INTERRUPTED,
  EXIT_OK,
  UsageError,
  collect,
  configuredBucket,
  loadConfig,
  withCommon,
  type CommonOptions,
} from './common.js';
import { ProgressReporter, interruptOnSignals } from './progress.js';
import { withBucket } from './storageTarget.js';

const LABEL = 'import-legacy';

// Enough to overlap one entry's fsyncs with another's reads; more only adds seeks.
const IMPORT_CONCURRENCY = 8;

interface ImportLegacyOptions extends CommonOptions {
  bucket?: string[];
  move?: boolean;
  copy?: boolean;
  link?: boolean;
  dryRun?: boolean;
  decode?: boolean;
  report?: string;
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

const HELP_WIDTH = 88;

/** Words joined by commas, in lines of at most `width` characters. */
function wrapWords(words: readonly string[], width: number): string {
  const lines: string[] = [];
  let line = '';
  for (const [index, word] of words.entries()) {
    const piece = index < words.length - 1 ? `${word},` : word;
    if (line !== '' && line.length + 1 + piece.length > width) {
      lines.push(line);
      line = piece;
    } else line = line === '' ? piece : `${line} ${piece}`;
  }
  return [...lines, line].join('\n');
}

/** A bucket directory of the py tree, or a symlink in its place (walked never, reported once). */
async function isBucketPlace(path: string): Promise<boolean> {
  const info = await lstat(path).catch(() => null);
  return info !== null && (info.isDirectory() || info.isSymbolicLink());
}

/** The once-per-run line for `--link` files that were copied because the kernel refused the link. */
function linkRefusalNote(copiedNotLinked: ReadonlyMap<string, number>): string | null {
  if (copiedNotLinked.size === 0) return null;
  const total = [...copiedNotLinked.values()].reduce((sum, count) => sum + count, 0);
  const codes = [...copiedNotLinked.keys()].join(', ');
  const why = copiedNotLinked.has('EPERM')
    ? 'the legacy files belong to another user (fs.protected_hardlinks); chown them to the user running the import, or run as their owner, to link them'
    : 'the files are on another filesystem or at their link limit';
  return `${total} files copied because the kernel refused hard links (${codes}): ${why}`;
}

/** The path itself or its nearest existing ancestor: where a new root would be created. */
async function nearestExisting(path: string): Promise<string> {
  let current = path;
  for (;;) {
    try {
      await stat(current);
      return current;
    } catch {
      const parent = dirname(current);
      if (parent === current) return current;
      current = parent;
    }
  }
}

/** The bytes step of fetched originals (metadata stripping), for imported ones too. */
function preparerOf(stripMetadata: boolean): ImportOptions['prepare'] {
  return (image) => {
    const prepared = prepareOriginal(image, { stripMetadata });
    return { image: prepared.image, warning: prepared.failed ? `metadata not stripped: ${prepared.unchangedReason ?? ''}` : null };
  };
}

function closeStream(stream: WriteStream): Promise<void> {
  return new Promise((done, fail) => {
    stream.once('error', fail);
    stream.end(() => done());
  });
}

async function importLegacy(pyRootArgument: string, options: ImportLegacyOptions): Promise<number> {
  const config = loadConfig(options, {}, LABEL);
  const root = resolve(config.root);
  const pyRoot = resolve(pyRootArgument);
  const mode: ImportMode = options.move === true ? 'move' : options.link === true ? 'link' : 'copy';
  const dryRun = options.dryRun === true;

  if (!(await isDirectory(pyRoot))) throw new UsageError(`${pyRootArgument}: not a directory`);
  if (pyRoot === root) throw new UsageError(`${pyRootArgument}: the imageproxy-py tree cannot be the root itself`);
  let buckets: string[];
  if (options.bucket !== undefined && options.bucket.length > 0) {
    buckets = [...new Set(options.bucket.map((bucket) => configuredBucket(config, '--bucket', bucket)))];
  } else {
    buckets = [];
    for (const bucket of Object.keys(config.buckets)) {
      if (await isBucketPlace(join(pyRoot, bucket))) buckets.push(bucket);
    }
    if (buckets.length === 0) {
      throw new UsageError(`${pyRootArgument}: holds none of the configured buckets (${Object.keys(config.buckets).join(', ')})`);
    }
  }
  const run = { config, root, pyRoot, buckets, mode, dryRun, options };
  if (config.storage.type === 's3') {
    if (mode === 'link') throw new UsageError('--link: a bucket has no hard links (storage.type is "s3"); use --copy or --move');
    return withBucket(LABEL, config, async ({ store, where }) => {
      const { list } = await readBucketBlocklist(store);
      const target: ImportTarget = { kind: 'bucket', backend: createS3Backend(store, { locks: new ImageStore(root) }) };
      const result = await importInto(run, target, where, list);
      // The gateway that stopped the run: one line and its exit code (storageTarget.ts), after the summary.
      if (result.stoppedBy !== null) throw result.stoppedBy;
      return result.exitCode;
    });
  }
  if (mode === 'link' && !(await sameFilesystem(pyRoot, await nearestExisting(root)))) {
    throw new UsageError(`--link: ${pyRoot} and ${root} are on different filesystems (hard links need one); use --copy or --move`);
  }
  const result = await importInto(run, { kind: 'tree', store: new ImageStore(root) }, root, await readBlocklist(root));
  return result.exitCode;
}

interface ImportRun {
  config: Config;
  root: string;
  pyRoot: string;
  buckets: string[];
  mode: ImportMode;
  dryRun: boolean;
  options: ImportLegacyOptions;
}

/** Imports into `target` (shown as `where`), refusing what `storedBlocklist` and the config block; answers the exit code. */
async function importInto(
  run: ImportRun,
  target: ImportTarget,
  where: string,
  storedBlocklist: Blocklist,
): Promise<{ exitCode: number; stoppedBy: ImageproxyError | null }> {
  const { config, root, pyRoot, buckets, mode, dryRun, options } = run;
  // What the operator took down is not brought back by an import: key, host or bytes.
  const blocklist = withConfigHosts(storedBlocklist, config.blockedHosts);
  const blockedReason = (candidate: BlockCandidate): string | null => {
    const entry = isBlocked(blocklist, {
      key: candidate.key,
      host: candidate.host,
      digests: candidate.digests,
    });
    return entry === null ? null : `${entry.kind} ${entry.value} is blocked (${entry.by}${entry.note === undefined ? '' : `: ${entry.note}`})`;
  };

  const reportPath = resolve(options.report ?? join(root, STATE_DIRECTORY, defaultReportName(Date.now())));
  await mkdir(dirname(reportPath), { recursive: true });
  const report = createWriteStream(reportPath, { flags: 'w' });
  report.write(REPORT_HEADER);

  const interrupt = interruptOnSignals(LABEL);
  const countStartedMs = Date.now();
  const total = await countLegacyEntries(pyRoot, buckets, interrupt.signal);
  process.stderr.write(
    `${LABEL}: ${total} entries in ${buckets.join(', ')} (counted in ${((Date.now() - countStartedMs) / 1000).toFixed(1)} s); ` +
      `${dryRun ? 'dry run, ' : ''}${mode} into ${where}\n`,
  );
  const progress = new ProgressReporter({ label: LABEL, total });
  let result;
  try {
    result = await importLegacyTree({
      pyRoot,
      buckets,
      target,
      mode,
      dryRun,
      decode: options.decode === true,
      limits: config.limits,
      concurrency: IMPORT_CONCURRENCY,
      signal: interrupt.signal,
      prepare: preparerOf(config.stripMetadata),
      blockedReason,
      onEntry: (outcome) => progress.tick(outcome),
      onProblem: (problem) => report.write(formatReportLine(problem.path, problem.reason, problem.detail)),
    });
  } finally {
    progress.stop();
    await closeStream(report);
    // Only now: the giving-up timer also covers a report file that does not close.
    interrupt.dispose();
  }
  const note = linkRefusalNote(result.copiedNotLinked);
  if (note !== null) process.stdout.write(`${LABEL}: ${note}\n`);
  const retryable = result.failedRetryable > 0 ? `, ${result.failedRetryable} of them a rerun may fix` : '';
  process.stdout.write(
    `${progress.summary(result.interrupted)}${retryable}; ${dryRun ? 'would import' : `imported (${mode})`} ${result.imported}, ` +
      `ignored ${result.ignored} (.err/.tmp), warnings ${result.warnings}; report: ${reportPath}\n`,
  );
  if (result.interrupted) return { exitCode: EXIT_INTERRUPTED, stoppedBy: null };
  // What the legacy tree itself holds (orphans, non-images, symlinks…) fails the same way
  // on every rerun: reported, and the run is still done.
  return { exitCode: result.failedRetryable > 0 ? EXIT_FAILURES : EXIT_OK, stoppedBy: result.stoppedBy };
}

export function register(program: Command): void {
  withCommon(
    program
      .command('import-legacy <py-root>')
      .description('adopt an imageproxy-py tree without network access')
      .addHelpText(
        'after',
        `
Every entry not imported gets one line in the report (path, reason, detail), reasons:
${wrapWords(LEGACY_FAILURE_REASONS, HELP_WIDTH)}
and warnings, imported all the same: ${LEGACY_WARNING_REASONS.join(', ')}.
Symlinks are never followed (outside_tree: one leading out of the tree).

With storage.type "s3" the originals go into the config's bucket, as the service stores
a fetched one (--copy or --move; --link is refused); credentials come from the AWS SDK's
chain. The gateway unreachable: one line, exit 1; credentials refused or no such bucket:
one line, exit 2.

Exit codes: 0 every entry imported, already there, or reported for a reason a rerun
cannot fix (every reason but io_error); 1 some entries failed for a reason a rerun might
fix (io_error: permissions, a full or failing disk; see the report); 2 usage or config
error (nothing done); 130 interrupted (Ctrl-C or SIGTERM; a second one, or 5 s with
entries still stuck, stops at once): run it again to finish.`,
      ),
  )
    .option('--bucket <bucket>', 'import this bucket (repeat for several; default: every configured bucket present)', collect)
    .addOption(new Option('--copy', 'copy the files, the old tree untouched (default)').conflicts(['move', 'link']))
    .addOption(
      new Option('--link', 'hard-link the files (same filesystem only; fast; files the kernel will not link are copied)').conflicts(['move', 'copy']),
    )
    .addOption(new Option('--move', 'move the files and drop their .headers (fast on one filesystem)').conflicts(['link', 'copy']))
    .option('--dry-run', 'check everything, write nothing into the tree (the report is still written)')
    .option('--decode', 'also decode every image in full, as check --decode does: what it would flag is not imported (slow)')
    .option('--report <file>', 'where to list the entries not imported (default {root}/.imageproxy/import-legacy-<UTC time>.tsv)')
    .action(async (pyRoot: string, options: ImportLegacyOptions) => {
      process.exitCode = await importLegacy(pyRoot, options);
    });
}
