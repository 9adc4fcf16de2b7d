/**
 * `imageproxy migrate-storage --to s3|tree`: copies the tree under `root` into the bucket
 * of the config's `storage` group, or the bucket back into the tree
 * (server/ops/storageMigration.ts), resumable, with progress on stderr, one report line
 * per problem on stdout, and the exit codes of server/cli/common.ts. Credentials come
 * from the AWS SDK's chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the shared
 * credentials file), never from the config.
 */
import { Option, type Command } from 'commander';
import { resolve } from 'node:path';
import { s3StoreSettingsOf } from '../config/storageSettings.js';
import { isImageproxyError, type ImageproxyError } from '../errors.js';
import {
  MIGRATION_REASONS,
  copyBucketToTree,
  copyTreeToBucket,
  countBucketObjects,
  countTreeImages,
  migrationReportLine,
  type MigrationOptions,
  type MigrationOutcome,
} from '../ops/storageMigration.js';
import { openS3Store } from '../storage/openS3Store.js';
import { ImageStore } from '../tree/store.js';
import { EXIT_FAILURES, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, collect, configuredBucket, loadConfig, parsePositiveInteger, withCommon, type CommonOptions } from './common.js';
import { ProgressReporter, interruptOnSignals, type ItemOutcome } from './progress.js';

const LABEL = 'migrate-storage';

// A few requests in flight hide the gateway's round trip; many would only queue in it
// (and hold an image each in memory).
const DEFAULT_CONCURRENCY = 4;
const MAX_CONCURRENCY = 64;

interface MigrateStorageOptions extends CommonOptions {
  to: 's3' | 'tree';
  bucket?: string[];
  dryRun?: boolean;
  verify?: boolean;
  concurrency?: string;
}

const PROGRESS_OUTCOME: Readonly<Record<MigrationOutcome, ItemOutcome>> = { copied: 'ok', present: 'skipped', failed: 'failed' };

/** A gateway failure as one line: what it was, and the detail that names the gateway, the bucket and the key id. */
function gatewayLine(error: ImageproxyError): string {
  return `${LABEL}: ${error.message}: ${error.detail ?? error.code}`;
}

/** The exit code of a run the gateway stopped or refused: 1 when it may come back (unreachable), 2 when the setup is wrong (credentials, bucket). */
function exitOfGatewayFailure(error: ImageproxyError): number {
  return error.code === 'storage_unavailable' ? EXIT_FAILURES : EXIT_USAGE;
}

/**
 * A failure that ended the walk itself (a directory of the tree that cannot be read, a
 * listing the gateway broke off): one line naming it, exit 1; a rerun goes on from there.
 */
function walkFailure(error: unknown): number {
  if (isImageproxyError(error)) {
    process.stderr.write(`${gatewayLine(error)}; stopped: run it again to finish\n`);
    return exitOfGatewayFailure(error);
  }
  process.stderr.write(`imageproxy: ${LABEL}: ${error instanceof Error ? error.message : String(error)}; stopped: run it again to finish\n`);
  return EXIT_FAILURES;
}

async function migrateStorage(options: MigrateStorageOptions): Promise<number> {
  const config = loadConfig(options, {}, 'any');
  const root = resolve(config.root);
  const buckets =
    options.bucket !== undefined && options.bucket.length > 0
      ? [...new Set(options.bucket.map((bucket) => configuredBucket(config, '--bucket', bucket)))]
      : Object.keys(config.buckets);
  const concurrency = options.concurrency === undefined ? DEFAULT_CONCURRENCY : Math.min(parsePositiveInteger('--concurrency', options.concurrency), MAX_CONCURRENCY);
  const settings = s3StoreSettingsOf(config.storage);
  const store = await openS3Store(settings);
  const interrupt = interruptOnSignals(LABEL);
  try {
    // One small listing: the gateway answers, takes our credentials and has the bucket.
    try {
      for await (const listed of store.list('', { pageSize: 1 })) {
        void listed;
        break;
      }
    } catch (error) {
      if (!isImageproxyError(error)) throw error;
      process.stderr.write(`${gatewayLine(error)}\n`);
      return exitOfGatewayFailure(error);
    }
    const where = `${settings.endpoint ?? `AWS ${settings.region}`} bucket ${settings.bucket}${config.storage.prefix === '' ? '' : ` prefix ${config.storage.prefix}`}`;
    const [from, to] = options.to === 's3' ? [root, where] : [where, root];
    let total: number;
    try {
      total = options.to === 's3' ? await countTreeImages(root, buckets, interrupt.signal) : await countBucketObjects(store, buckets, interrupt.signal);
    } catch (error) {
      return walkFailure(error);
    }
    process.stderr.write(`${LABEL}: ${total} objects in ${buckets.join(', ')}; ${options.dryRun === true ? 'dry run, ' : ''}from ${from} to ${to}\n`);
    const progress = new ProgressReporter({ label: LABEL, total, unit: 'objects' });
    const migration: MigrationOptions = {
      buckets,
      store,
      imageStore: new ImageStore(root),
      concurrency,
      dryRun: options.dryRun === true,
      verify: options.verify === true,
      signal: interrupt.signal,
      events: {
        onItem: (outcome) => progress.tick(PROGRESS_OUTCOME[outcome]),
        onProblem: (problem) => process.stdout.write(migrationReportLine(problem)),
        onPlanned: (source, target) => process.stdout.write(`would copy\t${source}\t${target}\n`),
      },
    };
    let result;
    try {
      result = options.to === 's3' ? await copyTreeToBucket(root, migration) : await copyBucketToTree(migration);
    } catch (error) {
      return walkFailure(error);
    } finally {
      progress.stop();
    }
    process.stdout.write(
      `${progress.summary(result.interrupted)}; ${options.dryRun === true ? 'would copy' : 'copied'} ${result.copied}, ` +
        `already there ${result.present}, failed ${result.failed}, left behind ${result.leftBehind}; ` +
        `of them audit records: ${options.dryRun === true ? 'would copy' : 'copied'} ${result.audit.copied}, already there ${result.audit.present}\n`,
    );
    if (result.interrupted) return EXIT_INTERRUPTED;
    if (result.stoppedBy !== null) {
      process.stderr.write(`${gatewayLine(result.stoppedBy)}; stopped: run it again to finish\n`);
      return EXIT_FAILURES;
    }
    return result.failed > 0 ? EXIT_FAILURES : EXIT_OK;
  } finally {
    interrupt.dispose();
    store.close();
  }
}

export function register(program: Command): void {
  withCommon(
    program
      .command('migrate-storage')
      .description("copy the tree into the config's S3 bucket (storage.*), or the bucket back into the tree; resumable")
      .addHelpText(
        'after',
        `
The bucket is the config's storage.endpoint, storage.bucket, storage.region and
storage.prefix (storage.type may stay "tree" while you migrate). Credentials come from the
AWS SDK's chain: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the shared credentials
file (AWS_PROFILE); never from the config.

The audit log goes too: each line of {root}/.imageproxy/audit.log becomes an object
under .imageproxy/audit/, and back, the records the tree's log lacks are appended in
time order.

A rerun copies only what is missing or different (same sha256: left as it is). Progress
goes to stderr; stdout gets one line per problem (reason, tree path or object name,
detail), reasons: ${Object.values(MIGRATION_REASONS).join(', ')}; and the summary.

Exit codes: 0 everything copied or already there (entries left behind, such as symlinks,
are reported); 1 some failed (see the lines), or the gateway became unreachable: run it
again; 2 usage or config error, credentials refused or no such bucket (nothing done);
130 interrupted (Ctrl-C or SIGTERM): run it again to finish.`,
      ),
  )
    .addOption(new Option('--to <where>', 's3: the tree into the bucket; tree: the bucket into the tree').choices(['s3', 'tree']).makeOptionMandatory())
    .option('--bucket <bucket>', 'only this bucket of the config (repeat for several; default: all)', collect)
    .option('--dry-run', 'list what would be copied (one line each on stdout), write nothing')
    .option('--verify', 'read every object back and compare its digest, also those already there (an altered one is copied again)')
    .option('--concurrency <n>', `objects copied at once (default ${DEFAULT_CONCURRENCY}, at most ${MAX_CONCURRENCY})`)
    .action(async (options: MigrateStorageOptions) => {
      process.exitCode = await migrateStorage(options);
    });
}
