/**
 * `imageproxy serve`: runs the HTTP server (public listener and admin listener) until a
 * signal. SIGHUP re-reads the config and secrets and applies them without dropping a
 * request (an invalid new config is refused, the running one kept); SIGTERM/SIGINT stop
 * accepting, let requests finish within `shutdownGraceMs`, answer the rest 503
 * `shutting_down` and exit 0. Whatever the disk does, the process is gone a few seconds
 * after the grace period (server/cli/processExit.ts); a second SIGTERM/SIGINT ends it at once.
 */
import type { Command } from 'commander';
import { relative, resolve } from 'node:path';
import { ConfigError, type Config, type ConfigLayer } from '../config/config.js';
import { StartInterrupted, WorkersFailedToStart, runPrimary, shareWorkerMetrics, workerSlot } from '../http/cluster.js';
import { ReloadRefused, StartRefused, openBucket, startServer, type OpenBucket, type RunningServer } from '../http/server.js';
import { startDescriptorWatch } from '../observe/descriptorWatch.js';
import { createLogger, type Logger } from '../observe/log.js';
import { endBySignal, exitProcess } from './processExit.js';
import { probeTreeWritable } from '../http/readiness.js';
import { normalizeStorePrefix } from '../storage/objectNames.js';
import { SECRET_FLAG_WARNING, resolveSecrets } from '../config/secrets.js';
import { EXIT_INTERRUPTED, UsageError, configFlagLayer, loadConfig, withCommon, withConfigFlags, type CommonOptions } from './common.js';

type ServeOptions = CommonOptions & Record<string, unknown>;

/**
 * After the grace period: the 503s' flush (server/http/server.ts) and the closing of the
 * image service take a second or so; past this the process ends without them.
 */
const HARD_STOP_AFTER_GRACE_MS = 4000;
/** At exit, how long thread-pool work still running (a file being written) may take to end. */
const EXIT_SETTLE_MS = 1000;

/** The config keys serve mirrors as flags (server/config/schema.ts gives flag and help). */
const SERVE_CONFIG_FLAGS = [
  'listen',
  'admin.listen',
  'delivery',
  'engine',
  'allowPrivateNetworks',
  'calendarYearWeeks',
  'limits.maxBytes',
  'workers',
  'logLevel',
] as const;

async function serve(options: ServeOptions): Promise<void> {
  // Kept for reloads, so a flag keeps winning over the file.
  const flags = configFlagLayer(options, SERVE_CONFIG_FLAGS);
  const slot = workerSlot();
  // A worker of `--workers N` leaves the admin listener to the primary (server/http/cluster.ts).
  const adapt = (loaded: Config): Config => (slot === null ? loaded : { ...loaded, admin: { listen: null } });
  const config = adapt(loadConfig(options, flags, 'any'));
  const root = resolve(config.root);
  // Before the secret is generated under it, and before anything listens.
  try {
    await probeTreeWritable(root);
  } catch (error) {
    throw new UsageError(`root ${root} cannot be created or written: ${(error as Error).message}`);
  }
  const processLogger = createLogger(config.logLevel);
  const logger = slot === null ? processLogger : processLogger.child({ worker: slot });
  // Every process that accepts connections: the primary of --workers N hands them out.
  startDescriptorWatch(logger);
  const secrets = resolveSecrets(config, true);
  if (secrets.generatedAt !== null) {
    logger.warn(
      { file: secrets.generatedAt },
      `NO SECRET CONFIGURED: generated a random one in ${secrets.generatedAt} (mode 0600). Links signed by your site will not verify until you set the same secret there (IMAGE_CACHE_SECRET) or point secretFile at your site's secret.`,
    );
  } else if (secrets.generated && slot === null) {
    // At every start, not only the first: a forgotten secret makes every link answer 410.
    logger.warn(
      { file: secrets.file },
      `NO SECRET CONFIGURED: running on the secret generated in ${secrets.file ?? 'the root'}; links signed by your site verify only if it uses that same secret. Set secretFile or secrets to your site's secret.`,
    );
  }
  // Once started: a refused start says its one line only.
  const warnSecretFlag = (): void => {
    if (options.secret !== undefined && options.secret.length > 0) logger.warn(SECRET_FLAG_WARNING);
  };
  const startFields = {
    root,
    storage: config.storage.type === 'tree' ? 'tree' : `s3 ${config.storage.bucket ?? ''}/${normalizeStorePrefix(config.storage.prefix)} at ${config.storage.endpoint ?? config.storage.region}`,
    buckets: Object.keys(config.buckets),
    sizes: config.sizes,
    engine: config.engine,
    delivery: config.delivery,
    allowPrivateNetworks: config.allowPrivateNetworks,
    secrets: secrets.source,
    shutdownGraceMs: config.shutdownGraceMs,
    workers: config.workers,
  };
  process.on('unhandledRejection', (reason) => logger.error({ err: reason }, 'unhandled rejection'));
  if (slot === null && config.workers > 1) {
    let primary;
    let bucket: OpenBucket | null = null;
    try {
      // Probed here first: a bucket that refuses us is said once, not once per worker.
      if (config.storage.type === 's3') bucket = await openBucket(config, logger);
      primary = await runPrimary({
        workers: config.workers,
        root,
        buckets: Object.keys(config.buckets),
        ...(bucket === null ? {} : { storageProbe: bucket.probe }),
        adminListen: config.admin.listen,
        shutdownGraceMs: config.shutdownGraceMs,
        logger,
      });
    } catch (error) {
      // The worker has said why on stderr.
      if (error instanceof WorkersFailedToStart) process.exit(error.exitCode);
      if (error instanceof StartInterrupted) {
        logger.info({ signal: error.signal }, `start interrupted by ${error.signal}: every worker has stopped`);
        process.exit(EXIT_INTERRUPTED);
      }
      if (error instanceof StartRefused) throw new UsageError(error.message);
      throw error;
    }
    logger.info(
      { ...startFields, address: primary.url, admin: primary.adminUrl },
      `listening on ${primary.url} with ${config.workers} workers${primary.adminUrl === null ? ' (no admin listener)' : `, admin (metrics, readiness) on ${primary.adminUrl}`}`,
    );
    if (secrets.generatedAt !== null) process.stderr.write(firstLinkExample(primary.url, root, config));
    warnSecretFlag();
    const code = await primary.stopped;
    bucket?.objects.close();
    logger.info({ code }, 'stopped: every worker has exited');
    process.exit(code);
  }

  let running: RunningServer;
  try {
    running = await startServer({ config, secrets: secrets.secrets, logger, treeJobs: slot === null || slot === 1 });
  } catch (error) {
    if (error instanceof StartRefused) throw new UsageError(error.message);
    throw error;
  }
  if (slot !== null) {
    shareWorkerMetrics(running.metrics.registry);
    logger.info({ pid: process.pid, address: running.url, treeJobs: slot === 1 }, `worker ${slot} serving on ${running.url}`);
  } else {
    logger.info(
      { ...startFields, address: running.url, admin: running.adminUrl },
      `listening on ${running.url}${running.adminUrl === null ? ' (no admin listener)' : `, admin (metrics, readiness) on ${running.adminUrl}`}`,
    );
    if (secrets.generatedAt !== null) process.stderr.write(firstLinkExample(running.url, root, config));
    warnSecretFlag();
  }

  process.on('SIGHUP', () => void reload(options, flags, adapt, running, logger));
  const shutdown = (signal: NodeJS.Signals): void => {
    logger.info({ signal, graceMs: config.shutdownGraceMs }, 'shutting down: no new connections; requests in flight may finish');
    // A file operation stuck in the kernel (a dead disk) would hold the stop for ever.
    setTimeout(() => {
      logger.error({ signal, afterGraceMs: HARD_STOP_AFTER_GRACE_MS }, 'not stopped after the grace period: ending the process now');
      endBySignal(signal);
    }, config.shutdownGraceMs + HARD_STOP_AFTER_GRACE_MS).unref();
    running.close().then(
      async (summary) => {
        logger.info(summary, 'stopped');
        await exitProcess(0, signal, EXIT_SETTLE_MS);
      },
      async (error: unknown) => {
        logger.error({ err: error }, 'stopping failed');
        await exitProcess(1, signal, EXIT_SETTLE_MS);
      },
    );
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
}

/** SIGHUP: the same loading as at start; on any failure the running settings stay. */
async function reload(options: ServeOptions, flags: ConfigLayer, adapt: (loaded: Config) => Config, running: RunningServer, logger: Logger): Promise<void> {
  let config: Config;
  let secrets: string[];
  try {
    config = adapt(loadConfig(options, flags, 'any'));
    // No secret is generated on reload: one that vanished is an error to see, not to paper over.
    secrets = resolveSecrets(config, false).secrets;
  } catch (error) {
    const reason = error instanceof ConfigError || error instanceof UsageError ? error.message : String(error);
    logger.error({ reason }, `RELOAD REFUSED: ${reason}; still running with the previous config and secrets`);
    return;
  }
  try {
    const summary = await running.reload(config, secrets);
    logger.info(summary, summary.changed.length === 0 ? 'reloaded: nothing changed' : `reloaded: ${summary.changed.join(', ')} changed; ${summary.secrets} secrets`);
  } catch (error) {
    const reason = error instanceof ReloadRefused ? error.message : String(error);
    logger.error({ reason, err: error instanceof ReloadRefused ? undefined : error }, `RELOAD REFUSED: ${reason}; still running with the previous config and secrets`);
  }
}

/** Ready to paste: sign a link with the generated secret and fetch it. */
function firstLinkExample(url: string, root: string, config: Config): string {
  const script = resolve(process.argv[1] ?? 'dist/server/cli.js');
  const fromHere = relative(process.cwd(), script);
  // Relative inside the checkout (`npm start`), absolute from anywhere else.
  const cli = `node ${fromHere.startsWith('..') ? script : fromHere}`;
  const imageUrl = 'https://upload.wikimedia.org/wikipedia/commons/3/3f/JPEG_example_flower.jpg';
  const sign = `${cli} sign ${imageUrl} --root ${root}${config.calendarYearWeeks ? ' --calendar-year-weeks' : ''}`;
  return [
    '',
    'First link: sign an image URL with the generated secret, then fetch it:',
    `  ${sign}`,
    `  curl -sS -o /tmp/imageproxy-first.jpg -w '%{http_code} %{content_type} %{size_download}\\n' "${url}$(${sign})"`,
    `For an image served from this machine (http://127.0.0.1:…), start serve with --allow-private-networks.`,
    '',
  ].join('\n');
}

export function register(program: Command): void {
  withConfigFlags(withCommon(program.command('serve').description('run the HTTP server (SIGHUP reloads config and secrets, SIGTERM stops gracefully)')), SERVE_CONFIG_FLAGS)
    .action(serve);
}
