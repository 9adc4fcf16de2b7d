/**
 * `imageproxy populate <file>`: stores every image of a list (one URL or signed link per
 * line, server/ops/populateList.ts) through the server's own image service
 * (server/service/imageServiceFactory.ts): same policy, limits, single-flight and backoff, so a
 * server running on the same tree shares each fetch. Already stored images are skipped
 * without contacting the origin, so a rerun resumes. `<file>.success` and `<file>.failed`
 * (server/ops/lineReports.ts) list the finished lines while it runs.
 */
import { Option, type Command } from 'commander';
import { constants, createReadStream } from 'node:fs';
import { access } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { pino } from 'pino';
import { backoffRemainingSeconds } from '../fetch/backoff.js';
import type { Config } from '../config/config.js';
import { LOG_LEVELS } from '../config/schema.js';
import { toImageproxyError, type ErrorCode } from '../errors.js';
import { HostScheduler } from '../fetch/hostScheduler.js';
import type { ImageRequest } from '../service/imageService.js';
import { createImageServiceFor, type ImageServiceParts } from '../service/imageServiceFactory.js';
import { LineReports } from '../ops/lineReports.js';
import { linkRulesOf } from '../contract/link.js';
import type { Logger } from '../observe/log.js';
import type { ModernFormat } from '../contract/accept.js';
import {
  failedLine,
  parseFormatList,
  parsePopulateLine,
  parseSizeList,
  successLine,
  targetSizes,
  type PopulateLineRules,
  type PopulateTarget,
} from '../ops/populateList.js';
import type { SizeSpec } from '../contract/sizes.js';
import { ImageStore } from '../tree/store.js';
import { treeBackend, type ImageBackend } from '../storage/imageBackend.js';
import { createS3Backend } from '../storage/s3Backend.js';
import { StartRefused, openBucket, type OpenBucket } from '../http/server.js';
import {
  EXIT_FAILURES,
  EXIT_INTERRUPTED,
  EXIT_OK,
  UsageError,
  configFlagLayer,
  configuredBucket,
  loadConfig,
  parsePositiveInteger,
  withCommon,
  withConfigFlags,
  type CommonOptions,
} from './common.js';
import { ProgressReporter, interruptOnSignals } from './progress.js';

const LABEL = 'populate';

/** The config keys populate mirrors as flags (server/config/schema.ts gives flag and help). */
const POPULATE_CONFIG_FLAGS = ['allowPrivateNetworks'] as const;

// Lines read ahead of the work: enough for every host to have work queued behind a slow
// one, small enough that a list of millions never sits in memory.
const READ_AHEAD_LINES = 1024;

interface PopulateOptions extends CommonOptions {
  bucket: string;
  sizes?: string;
  formats?: string;
  concurrency: string;
  perHost: string;
  dryRun?: boolean;
  allowPrivateNetworks?: boolean;
  logLevel: string;
}

type LineOutcome = { kind: 'made' } | { kind: 'stored' } | { kind: 'failed'; code: ErrorCode };

function requestFor(target: PopulateTarget, size: SizeSpec, format?: ModernFormat): ImageRequest {
  return {
    link: { bucket: target.bucket, size, signature: '', extUrl: target.extUrl, proxy: false },
    imageUrl: target.imageUrl,
    key: target.key,
    ...(format === undefined ? {} : { formatClass: format }),
  };
}

/** Each thumbnail size of a target with each format class (`--formats`): the class files a line needs. */
function classTargets(target: PopulateTarget, formats: readonly ModernFormat[]): Array<{ size: SizeSpec & { kind: 'box' }; format: ModernFormat }> {
  return target.sizes.flatMap((size) => formats.map((format) => ({ size, format })));
}

/** Whether a format class's thumbnail is stored (what populate would otherwise make). */
async function classStored(store: ImageBackend, target: PopulateTarget, size: SizeSpec & { kind: 'box' }, format: ModernFormat): Promise<boolean> {
  return (await store.findClassVariant(target.bucket, target.key, size.label, format)) !== null;
}

function labelOf(size: SizeSpec): string | null {
  return size.kind === 'box' ? size.label : null;
}

/**
 * One line: the original, then each thumbnail. What is stored already is not asked for,
 * so a fully stored line never reaches the service, let alone the origin.
 */
async function populateTarget(parts: ImageServiceParts, target: PopulateTarget, formats: readonly ModernFormat[], logger: Logger): Promise<LineOutcome> {
  let made = false;
  try {
    for (const size of targetSizes(target)) {
      if ((await parts.backend.find(target.bucket, target.key, labelOf(size))) !== null) continue;
      await parts.service.get(requestFor(target, size));
      made = true;
    }
    for (const { size, format } of classTargets(target, formats)) {
      if (await classStored(parts.backend, target, size, format)) continue;
      await parts.service.get(requestFor(target, size, format));
      made = true;
    }
  } catch (thrown) {
    const error = toImageproxyError(thrown);
    if (error.code === 'internal') logger.error({ err: thrown, line: target.text }, 'populate: internal error');
    return { kind: 'failed', code: error.code };
  }
  return made ? { kind: 'made' } : { kind: 'stored' };
}

/** The entries of the list (neither blank nor comment): the total of the progress display. */
async function countEntries(file: string): Promise<number> {
  let count = 0;
  const lines = createInterface({ input: createReadStream(file), crlfDelay: Infinity });
  for await (const line of lines) {
    const text = line.trim();
    if (text !== '' && !text.startsWith('#')) count += 1;
  }
  return count;
}

async function checkFiles(file: string, dryRun: boolean): Promise<void> {
  try {
    await access(file, constants.R_OK);
  } catch {
    throw new UsageError(`${file}: cannot read it`);
  }
  if (dryRun) return;
  try {
    await access(dirname(resolve(file)), constants.W_OK);
  } catch {
    throw new UsageError(`${file}: cannot write ${file}.success and ${file}.failed beside it`);
  }
}

function formatsOf(options: PopulateOptions): ModernFormat[] {
  if (options.formats === undefined) return [];
  if (options.sizes === undefined) throw new UsageError('--formats: only thumbnails have formats; give --sizes too');
  try {
    return parseFormatList(options.formats);
  } catch (error) {
    throw new UsageError(`--formats: ${(error as Error).message}`);
  }
}

function lineRules(config: Config, options: PopulateOptions): PopulateLineRules {
  const bucket = configuredBucket(config, '--bucket', options.bucket);
  let sizes: PopulateLineRules['sizes'] = [];
  if (options.sizes !== undefined) {
    try {
      sizes = parseSizeList(options.sizes, config.sizes);
    } catch (error) {
      throw new UsageError(`--sizes: ${(error as Error).message}`);
    }
  }
  return { link: linkRulesOf(config), bucket, sizes };
}

function readLines(file: string): AsyncIterable<string> {
  return createInterface({ input: createReadStream(file), crlfDelay: Infinity });
}

/** `--dry-run`: what each line would come to, from the store alone (a bucket's backoff records are per process: none). */
async function dryRun(file: string, rules: PopulateLineRules, formats: readonly ModernFormat[], store: ImageBackend): Promise<number> {
  const seen = new Set<string>();
  const counts = { stored: 0, fetch: 0, backoff: 0, failed: 0, duplicates: 0 };
  for await (const raw of readLines(file)) {
    const parsed = parsePopulateLine(raw, rules);
    if (parsed.kind === 'skip') continue;
    const text = parsed.kind === 'target' ? parsed.target.text : parsed.text;
    if (seen.has(text)) {
      counts.duplicates += 1;
      continue;
    }
    seen.add(text);
    if (parsed.kind === 'invalid') {
      counts.failed += 1;
      process.stdout.write(`failed ${failedLine(text, parsed.code)}\n`);
      continue;
    }
    const { target } = parsed;
    // The original comes first in targetSizes: a fetch is needed when it is missing.
    const [original, ...thumbnails] = await Promise.all(
      targetSizes(target).map((size) => store.find(target.bucket, target.key, labelOf(size))),
    );
    const classesStored = await Promise.all(classTargets(target, formats).map(({ size, format }) => classStored(store, target, size, format)));
    const missing = original === null || thumbnails.some((thumbnail) => thumbnail === null) || classesStored.includes(false);
    const inBackoff =
      original === null && backoffRemainingSeconds(await store.readFailure(target.bucket, target.key, target.key), Date.now()) > 0;
    const state = !missing ? 'stored' : inBackoff ? 'backoff' : 'fetch';
    counts[state] += 1;
    process.stdout.write(`${state} ${text}\n`);
  }
  process.stdout.write(
    `${LABEL}: dry run: ${counts.stored} already stored, ${counts.fetch} to fetch or make, ` +
      `${counts.backoff} in backoff, ${counts.failed} invalid, ${counts.duplicates} duplicate lines; nothing written\n`,
  );
  return counts.failed > 0 ? EXIT_FAILURES : EXIT_OK;
}

interface Job {
  index: number;
  target: PopulateTarget;
}

async function populate(file: string, options: PopulateOptions): Promise<number> {
  const config = loadConfig(options, configFlagLayer(options, POPULATE_CONFIG_FLAGS), 'any');
  const rules = lineRules(config, options);
  const formats = formatsOf(options);
  const concurrency = parsePositiveInteger('--concurrency', options.concurrency);
  const perHost = parsePositiveInteger('--per-host', options.perHost);
  const dry = options.dryRun === true;
  await checkFiles(file, dry);
  // Logs go to stderr beside the progress display; stdout carries the summary.
  const logger: Logger = pino({ level: options.logLevel, base: { service: 'imageproxy' } }, pino.destination(2));
  const bucket = await bucketOf(config, logger);
  try {
    const tree = new ImageStore(resolve(config.root));
    if (dry) return await dryRun(file, rules, formats, bucket === null ? treeBackend(tree) : createS3Backend(bucket.objects, { locks: tree }));
    const parts = await createImageServiceFor(config, logger, bucket === null ? {} : { objects: bucket.objects });
    try {
      return await populateFromList(file, { ...rules, formats }, { total: concurrency, perHost }, parts, logger);
    } finally {
      await parts.close();
    }
  } finally {
    bucket?.objects.close();
  }
}

/** With `storage.type: "s3"`, the bucket, probed as serve probes it (one line when it refuses us); null for the tree. */
async function bucketOf(config: Config, logger: Logger): Promise<OpenBucket | null> {
  if (config.storage.type !== 's3') return null;
  try {
    return await openBucket(config, logger);
  } catch (error) {
    if (error instanceof StartRefused) throw new UsageError(error.message);
    throw error;
  }
}

async function populateFromList(
  file: string,
  rules: PopulateLineRules & { formats: readonly ModernFormat[] },
  limits: { total: number; perHost: number },
  parts: ImageServiceParts,
  logger: Logger,
): Promise<number> {
  const interrupt = interruptOnSignals(LABEL);
  let total = await countEntries(file);
  const progress = new ProgressReporter({ label: LABEL, total });
  const successPath = `${file}.success`;
  const failedPath = `${file}.failed`;
  const reports = new LineReports({ success: successPath, failed: failedPath });
  const scheduler = new HostScheduler<Job>(limits);
  const seen = new Set<string>();
  let duplicates = 0;
  let linesOk = 0;
  let linesFailed = 0;

  // Wakes the reading loop when a job finishes or the run is interrupted.
  let wake: (() => void) | null = null;
  const changed = (): Promise<void> =>
    new Promise((done) => {
      wake = done;
    });
  const notify = (): void => {
    const waiting = wake;
    wake = null;
    waiting?.();
  };
  interrupt.signal.addEventListener('abort', notify);

  const record = (index: number, text: string, outcome: LineOutcome): void => {
    if (outcome.kind === 'failed') {
      reports.add('failed', index, failedLine(text, outcome.code));
      linesFailed += 1;
      progress.tick('failed');
    } else {
      reports.add('success', index, successLine(text));
      linesOk += 1;
      progress.tick(outcome.kind === 'made' ? 'ok' : 'skipped');
    }
  };

  const startJobs = (): void => {
    if (interrupt.signal.aborted) return;
    for (const { host, job } of scheduler.takeStartable()) {
      void populateTarget(parts, job.target, rules.formats, logger).then((outcome) => {
        scheduler.finish(host);
        record(job.index, job.target.text, outcome);
        startJobs();
        notify();
      });
    }
  };

  let index = 0;
  try {
    for await (const raw of readLines(file)) {
      if (interrupt.signal.aborted) break;
      const parsed = parsePopulateLine(raw, rules);
      if (parsed.kind === 'skip') continue;
      index += 1;
      const text = parsed.kind === 'target' ? parsed.target.text : parsed.text;
      if (seen.has(text)) {
        duplicates += 1;
        // Done once: the progress total counts each line once too.
        total -= 1;
        progress.setTotal(total);
        continue;
      }
      seen.add(text);
      if (parsed.kind === 'invalid') {
        record(index, text, { kind: 'failed', code: parsed.code });
        continue;
      }
      scheduler.enqueue(parsed.target.host, { index, target: parsed.target });
      startJobs();
      while (scheduler.queued + scheduler.running >= READ_AHEAD_LINES && !interrupt.signal.aborted) await changed();
    }
    while (scheduler.running > 0 || (scheduler.queued > 0 && !interrupt.signal.aborted)) await changed();
  } finally {
    progress.stop();
    interrupt.dispose();
    await reports.close();
  }
  const interrupted = interrupt.signal.aborted;
  process.stdout.write(
    `${progress.summary(interrupted)} (ok: fetched or made, skipped: already stored); ` +
      `${duplicates} duplicate lines; ${successPath}: ${linesOk} lines, ${failedPath}: ${linesFailed} lines\n`,
  );
  if (interrupted) return EXIT_INTERRUPTED;
  return linesFailed > 0 ? EXIT_FAILURES : EXIT_OK;
}

export function register(program: Command): void {
  const command = withCommon(
    program
      .command('populate <file>')
      .description(
        'fetch and store every image a list names (one image URL or signed link per line, # comments), as the server would; ' +
          'writes <file>.success and <file>.failed (exit 0 all stored, 1 some lines failed, 2 usage, 130 interrupted)',
      ),
  )
    .option('--bucket <bucket>', 'bucket of plain image URLs (links name their own)', 'i')
    .option('--sizes <labels>', 'also make these thumbnails, e.g. 150x,x200,250x250 (allowed sizes only)')
    .option('--formats <formats>', "also make each thumbnail's file for these format classes, e.g. avif,webp (config formats serves them)")
    .option('--concurrency <n>', 'lines worked on at once, all hosts together', '16')
    .option('--per-host <n>', 'lines worked on at once per origin host', '4');
  withConfigFlags(command, POPULATE_CONFIG_FLAGS)
    .option('--dry-run', 'say which lines are stored, would be fetched, are in backoff or invalid; fetch and write nothing')
    .addOption(
      new Option('--log-level <level>', 'log lines on stderr from this level (info: every fetch)')
        .choices(LOG_LEVELS)
        .default('error'),
    )
    .action(async (file: string, options: PopulateOptions) => {
      process.exitCode = await populate(file, options);
    });
}
