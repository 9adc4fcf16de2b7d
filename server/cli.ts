#!/usr/bin/env node
/**
 * The `imageproxy` command. Wires config, secrets, store and HTTP; holds no logic of
 * its own beyond turning flags into a config layer and results into lines and exit codes.
 */
import { Command, CommanderError, Option } from 'commander';
import { resolve } from 'node:path';
import { ConfigError, setKey, type ConfigLayer } from './config.js';
import {
  EXIT_USAGE,
  UsageError,
  loadConfig,
  parsePositiveInteger,
  withCommon,
  type CommonOptions,
} from './cli/common.js';
import { startServer } from './http/server.js';
import { createLogger } from './log.js';
import { resolveSecrets } from './secrets.js';
import { ImageStore } from './store.js';
import { CALENDAR_YEAR_WEEKS_HELP } from './cli/linkOptions.js';
import { register as registerNginxConfig } from './cli/nginxConfig.js';
import { register as registerSign } from './cli/sign.js';
import { register as registerVerify } from './cli/verify.js';
import { register as registerDecode } from './cli/decode.js';
import { register as registerImportLegacy } from './cli/importLegacy.js';
import { register as registerPurge } from './cli/purge.js';
import { register as registerBlock } from './cli/block.js';
import { register as registerUnblock } from './cli/unblock.js';
import { register as registerStats } from './cli/stats.js';
import { register as registerPopulate } from './cli/populate.js';

async function serve(options: CommonOptions & Record<string, unknown>): Promise<void> {
  const flags: ConfigLayer = {};
  if (typeof options.listen === 'string') flags.listen = options.listen;
  if (typeof options.delivery === 'string') flags.delivery = options.delivery;
  if (typeof options.engine === 'string') flags.engine = options.engine;
  if (typeof options.logLevel === 'string') flags.logLevel = options.logLevel;
  if (options.allowPrivateNetworks === true) flags.allowPrivateNetworks = true;
  if (options.calendarYearWeeks === true) flags.calendarYearWeeks = true;
  if (typeof options.maxBytes === 'string') setKey(flags, 'limits.maxBytes', parsePositiveInteger('--max-bytes', options.maxBytes));
  const config = loadConfig(options, flags);
  const logger = createLogger(config.logLevel);
  const secrets = resolveSecrets(config, true);
  if (secrets.generatedAt !== null) {
    logger.warn(
      { file: secrets.generatedAt },
      `NO SECRET CONFIGURED: generated a random one in ${secrets.generatedAt} (mode 0600). Links signed by your site will not verify until you set the same secret there (IMAGE_CACHE_SECRET) or point secretFile at your site's secret.`,
    );
  }
  const running = await startServer({ config, secrets: secrets.secrets, logger });
  logger.info(
    {
      address: running.url,
      root: running.store.root,
      delivery: config.delivery,
      engine: config.engine,
      allowPrivateNetworks: config.allowPrivateNetworks,
      secrets: secrets.source,
    },
    `listening on ${running.url}`,
  );
  process.on('unhandledRejection', (reason) => logger.error({ err: reason }, 'unhandled rejection'));
  const shutdown = (signal: string): void => {
    logger.info({ signal }, 'shutting down');
    setTimeout(() => process.exit(0), 10_000).unref();
    void running.close().finally(() => process.exit(0));
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
}

async function initBuckets(options: CommonOptions): Promise<void> {
  const config = loadConfig(options);
  const buckets = Object.keys(config.buckets);
  const created = await new ImageStore(resolve(config.root)).initBuckets(buckets);
  process.stdout.write(`${resolve(config.root)}: ${buckets.join(', ')}: created ${created} of ${buckets.length * 64 * 64} directories\n`);
}

export function buildProgram(): Command {
  const program = new Command('imageproxy')
    .description('Signed image cache and proxy for Gazelle-based sites')
    .exitOverride()
    .showSuggestionAfterError()
    // One line per error: commander puts its suggestion on a line of its own.
    .configureOutput({ writeErr: (text) => process.stderr.write(`${text.trim().replace(/\s*\n\s*/g, ' ')}\n`) });

  withCommon(program.command('serve').description('run the HTTP server'))
    .option('--listen <host:port>', 'address to listen on (port 0 picks a free one)')
    .addOption(new Option('--delivery <mode>', 'direct: send bytes; accel: X-Accel-Redirect for nginx').choices(['direct', 'accel']))
    .addOption(new Option('--engine <engine>', 'resize engine').choices(['sharp', 'jimp']))
    .option('--allow-private-networks', 'allow fetching from private, loopback and link-local addresses')
    .option('--calendar-year-weeks', CALENDAR_YEAR_WEEKS_HELP)
    .option('--max-bytes <n>', 'largest image accepted from an origin, in bytes')
    .addOption(new Option('--log-level <level>').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']))
    .action(serve);

  registerSign(program);
  registerVerify(program);
  registerDecode(program);

  registerNginxConfig(program);

  withCommon(program.command('init-buckets').description('create the 64 × 64 directories of each bucket (idempotent)')).action(
    initBuckets,
  );

  // Operations commands, one file each in server/cli/ (each exports register(program)).
  registerPurge(program);
  registerBlock(program);
  registerUnblock(program);
  registerImportLegacy(program);
  registerStats(program);
  registerPopulate(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and version are not errors; commander already printed its message.
      process.exit(error.exitCode === 0 ? 0 : EXIT_USAGE);
    }
    if (error instanceof UsageError || error instanceof ConfigError) {
      process.stderr.write(`imageproxy: ${error.message}\n`);
      process.exit(EXIT_USAGE);
    }
    throw error;
  }
}

await main(process.argv);
