/**
 * `imageproxy import-legacy <py-root>`: adopts an imageproxy-py tree (server/legacyImport.ts)
 * with a progress display, a report file of every entry not imported, and the exit codes
 * of server/cli/common.ts.
 */
import { Command, Option } from 'commander';
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { isBlocked, withConfigHosts } from '../blocklist.js';
import { readBlocklist } from '../blocklistStore.js';
import { STATE_DIRECTORY } from '../layout.js';
import {
  countLegacyEntries,
  importLegacyTree,
  sameFilesystem,
  type BlockCandidate,
  type ImportMode,
  type ImportOptions,
} from '../legacyImport.js';
import { REPORT_HEADER, defaultReportName, formatReportLine } from '../legacyTree.js';
import { prepareOriginal } from '../originals.js';
import { ImageStore } from '../store.js';
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

const LABEL = 'import-legacy';

// Enough to overlap one entry's fsyncs with another's reads; more only adds seeks.
const IMPORT_CONCURRENCY = 8;

interface ImportLegacyOptions extends CommonOptions {
  bucket?: string[];
  move?: boolean;
  copy?: boolean;
  link?: boolean;
  dryRun?: boolean;
  report?: string;
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
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
  const config = loadConfig(options);
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
      if (await isDirectory(join(pyRoot, bucket))) buckets.push(bucket);
    }
    if (buckets.length === 0) {
      throw new UsageError(`${pyRootArgument}: holds none of the configured buckets (${Object.keys(config.buckets).join(', ')})`);
    }
  }
  if (mode === 'link' && !(await sameFilesystem(pyRoot, await nearestExisting(root)))) {
    throw new UsageError(`--link: ${pyRoot} and ${root} are on different filesystems (hard links need one); use --copy or --move`);
  }

  // What the operator took down is not brought back by an import: key, host or bytes.
  const blocklist = withConfigHosts(await readBlocklist(root), config.blockedHosts);
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
      `${dryRun ? 'dry run, ' : ''}${mode} into ${root}\n`,
  );
  const progress = new ProgressReporter({ label: LABEL, total });
  let result;
  try {
    result = await importLegacyTree({
      pyRoot,
      buckets,
      store: new ImageStore(root),
      mode,
      dryRun,
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
    interrupt.dispose();
    await closeStream(report);
  }
  process.stdout.write(
    `${progress.summary(result.interrupted)}; ${dryRun ? 'would import' : `imported (${mode})`} ${result.imported}, ` +
      `ignored ${result.ignored} (.err/.tmp), warnings ${result.warnings}; report: ${reportPath}\n`,
  );
  if (result.interrupted) return EXIT_INTERRUPTED;
  return result.failed > 0 ? EXIT_FAILURES : EXIT_OK;
}

export function register(program: Command): void {
  withCommon(
    program
      .command('import-legacy <py-root>')
      .description(
        'adopt an imageproxy-py tree without network access (exit 0 all imported or already there, 1 some entries failed: see the report, 2 usage, 130 interrupted)',
      ),
  )
    .option('--bucket <bucket>', 'import this bucket (repeat for several; default: every configured bucket present)', collect)
    .addOption(new Option('--copy', 'copy the files, the old tree untouched (default)').conflicts(['move', 'link']))
    .addOption(new Option('--link', 'hard-link the files (same filesystem only; fast)').conflicts(['move', 'copy']))
    .addOption(new Option('--move', 'move the files and drop their .headers (fast on one filesystem)').conflicts(['link', 'copy']))
    .option('--dry-run', 'check everything, write nothing into the tree (the report is still written)')
    .option('--report <file>', 'where to list the entries not imported (default {root}/.imageproxy/import-legacy-<UTC time>.tsv)')
    .action(async (pyRoot: string, options: ImportLegacyOptions) => {
      process.exitCode = await importLegacy(pyRoot, options);
    });
}
