#!/usr/bin/env node
/**
 * The `imageproxy` command. Wires config, secrets, store and HTTP; holds no logic of
 * its own beyond turning flags into a config layer and results into lines and exit codes.
 */
import { Command, CommanderError, Option } from 'commander';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, setKey, type ConfigLayer } from './config.js';
import {
  EXIT_USAGE,
  UsageError,
  configuredBucket,
  loadConfig,
  parseInstant,
  parsePositiveInteger,
  withCommon,
  type CommonOptions,
} from './cli/common.js';
import { isImageproxyError } from './errors.js';
import { startServer } from './http/server.js';
import { imageUrlBytes, linkPathOf, linkRulesOf, parseLink } from './link.js';
import { createLogger } from './log.js';
import {
  CONFIG_MODULE_NAME,
  renderConfigModule,
  renderServerBlock,
  renderStandaloneConf,
  type NginxRenderInput,
} from './nginxConfig.js';
import { resolveSecrets } from './secrets.js';
import { signLink, verifyLinkSignature } from './signing.js';
import { ImageStore } from './store.js';
import { storageKey } from './layout.js';

async function serve(options: CommonOptions & Record<string, unknown>): Promise<void> {
  const flags: ConfigLayer = {};
  if (typeof options.listen === 'string') flags.listen = options.listen;
  if (typeof options.delivery === 'string') flags.delivery = options.delivery;
  if (typeof options.engine === 'string') flags.engine = options.engine;
  if (typeof options.logLevel === 'string') flags.logLevel = options.logLevel;
  if (options.allowPrivateNetworks === true) flags.allowPrivateNetworks = true;
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

function sign(imageUrl: string, options: CommonOptions & Record<string, unknown>): void {
  const config = loadConfig(options);
  const bucket = configuredBucket(config, '--bucket', typeof options.bucket === 'string' ? options.bucket : 'i');
  let parsed: URL;
  try {
    parsed = new URL(imageUrl);
  } catch {
    throw new UsageError(`${imageUrl} is not a URL`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new UsageError('the image URL must be http or https');
  const proxy = options.proxy === true;
  const sizeOption = (flag: '--height' | '--width', value: unknown): number | undefined => {
    if (typeof value !== 'string') return undefined;
    const size = parsePositiveInteger(flag, value);
    // The server ignores sizes outside the list: a link with one would not be what was asked.
    if (!config.sizes.includes(size)) throw new UsageError(`${flag}: ${size} is not an allowed size (${config.sizes.join(', ')})`);
    return size;
  };
  const height = sizeOption('--height', options.height);
  const width = sizeOption('--width', options.width);
  // As Gazelle's image_cache_encode: proxy links are always full size.
  const size = proxy || (height === undefined && width === undefined) ? 'full' : `${height ?? ''}x${width ?? ''}`;
  const extUrl = Buffer.from(imageUrl, 'utf8').toString('base64url');
  const [secret] = resolveSecrets(config, false).secrets;
  if (secret === undefined) throw new UsageError('no secret');
  const signature = signLink(secret, { bucket, extUrl, proxy }, parseInstant(options.at as string | undefined), {
    legacy: options.legacy === true,
  });
  process.stdout.write(`/${bucket}/${size}/${signature}/${extUrl}${proxy ? '/proxy' : ''}\n`);
}

function verify(path: string, options: CommonOptions & Record<string, unknown>): number {
  const config = loadConfig(options);
  const secrets = resolveSecrets(config, false).secrets;
  try {
    const link = parseLink(linkPathOf(path), linkRulesOf(config));
    const match = verifyLinkSignature(link, { ...config, secrets, nowMs: parseInstant(options.at as string | undefined) });
    if (match === null) {
      process.stdout.write('invalid: bad_signature: no configured secret signed this link in an accepted week\n');
      return 1;
    }
    const size = link.size.kind === 'full' ? 'full' : link.size.label;
    process.stdout.write(
      `valid: secret #${match.secretIndex}, week ${match.week.suffix} (${match.week.rule} year rule, ${match.week.instant}), ` +
        `${match.legacy ? 'legacy scheme (no bucket prefix)' : 'bucket scheme'}; bucket ${link.bucket}, size ${size}` +
        `${link.proxy ? ', proxy' : ''}, key ${storageKey(imageUrlBytes(link.extUrl))}\n`,
    );
    return 0;
  } catch (error) {
    if (!isImageproxyError(error)) throw error;
    process.stdout.write(`invalid: ${error.code}: ${error.message}\n`);
    return 1;
  }
}

/**
 * Removes what is stored for an image: by a link (any signature, even expired: admins
 * purge old links) or by its image URL, in one bucket or all of them.
 */
async function purge(target: string | undefined, options: CommonOptions & Record<string, unknown>): Promise<number> {
  const config = loadConfig(options);
  const store = new ImageStore(resolve(config.root));
  let urlBytes: Buffer;
  let buckets: string[];
  if (typeof options.imageUrl === 'string') {
    if (target !== undefined) throw new UsageError('give a link or --image-url, not both');
    urlBytes = Buffer.from(options.imageUrl, 'utf8');
    buckets = typeof options.bucket === 'string' ? [options.bucket] : Object.keys(config.buckets);
  } else {
    if (target === undefined) throw new UsageError('give a link to purge, or --image-url URL');
    let link;
    try {
      // The size does not matter here: every size of the image goes.
      const segments = linkPathOf(target).split('/');
      if (segments.length > 2) segments[2] = 'full';
      link = parseLink(segments.join('/'), linkRulesOf(config));
    } catch (error) {
      if (isImageproxyError(error)) throw new UsageError(`${target}: ${error.code}: ${error.message}`);
      throw error;
    }
    urlBytes = imageUrlBytes(link.extUrl);
    buckets = [link.bucket];
  }
  const key = storageKey(urlBytes);
  let removed = 0;
  for (const bucket of buckets) {
    configuredBucket(config, '--bucket', bucket);
    for (const path of await store.purge(bucket, key)) {
      process.stdout.write(`removed ${path}\n`);
      removed += 1;
    }
  }
  if (removed === 0) {
    process.stdout.write(`nothing stored for key ${key} in ${buckets.join(', ')}\n`);
    return 1;
  }
  process.stdout.write(`purged key ${key}; nginx may serve cached handles for up to 60 s (open_file_cache)\n`);
  return 0;
}

async function initBuckets(options: CommonOptions): Promise<void> {
  const config = loadConfig(options);
  const buckets = Object.keys(config.buckets);
  const created = await new ImageStore(resolve(config.root)).initBuckets(buckets);
  process.stdout.write(`${resolve(config.root)}: ${buckets.join(', ')}: created ${created} of ${buckets.length * 64 * 64} directories\n`);
}

/** The repository's nginx/ directory (dist/server/cli.js and server/cli.ts are both two levels down). */
const NJS_SCRIPT_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'nginx');

function nginxConfig(options: CommonOptions & Record<string, unknown>): void {
  const config = loadConfig(options);
  const secrets = resolveSecrets(config, false);
  const standalone = options.standaloneConf === true;
  const prefix = resolve(typeof options.prefix === 'string' ? options.prefix : 'nginx-prefix');
  const moduleDir = resolve(
    typeof options.moduleDir === 'string' ? options.moduleDir : standalone ? prefix : '/etc/nginx/imageproxy',
  );
  const input: NginxRenderInput = {
    nginxListen: config.nginx.listen,
    appListen: config.listen,
    root: resolve(config.root),
    internalPrefix: config.nginx.internalPrefix,
    njsDir: resolve(typeof options.njsDir === 'string' ? options.njsDir : NJS_SCRIPT_DIR),
    configModuleDir: moduleDir,
    buckets: config.buckets,
    sizes: config.sizes,
    skewSeconds: config.skewSeconds,
    secrets: secrets.secrets,
  };
  const workers = typeof options.workers === 'string' ? parsePositiveInteger('--workers', options.workers) : undefined;
  const text = standalone
    ? renderStandaloneConf(input, prefix, {
        ...(typeof options.user === 'string' ? { user: options.user } : {}),
        ...(workers === undefined ? {} : { workerProcesses: workers }),
      })
    : renderServerBlock(input);

  // The secrets go into a module only nginx's master reads; never world-readable.
  mkdirSync(moduleDir, { recursive: true, mode: 0o750 });
  const modulePath = join(moduleDir, CONFIG_MODULE_NAME);
  writeFileSync(modulePath, renderConfigModule(input), { mode: 0o600 });
  chmodSync(modulePath, 0o600);
  if (standalone) mkdirSync(prefix, { recursive: true });
  if (typeof options.out === 'string') {
    writeFileSync(options.out, text);
    process.stderr.write(`imageproxy: wrote ${resolve(options.out)} and ${modulePath} (0600, holds the secrets)\n`);
  } else {
    process.stdout.write(text);
    process.stderr.write(`imageproxy: wrote ${modulePath} (0600, holds the secrets; nginx's master reads it at start and reload)\n`);
  }
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
    .option('--max-bytes <n>', 'largest image accepted from an origin, in bytes')
    .addOption(new Option('--log-level <level>').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']))
    .action(serve);

  withCommon(program.command('sign <image-url>').description('print the signed path for an image URL, as Gazelle would'))
    .option('--bucket <bucket>', 'bucket', 'i')
    .option('--height <n>', 'maximum height')
    .option('--width <n>', 'maximum width')
    .option('--proxy', 'pass-through link (always full size)')
    .option('--legacy', 'sign without the bucket prefix (links from before buckets)')
    .option('--at <when>', 'sign as of this instant (ISO date or epoch seconds)')
    .action(sign);

  withCommon(program.command('verify <path>').description('say whether a link verifies, and why'))
    .option('--at <when>', 'verify as of this instant (ISO date or epoch seconds)')
    .action((path: string, options: CommonOptions & Record<string, unknown>) => {
      process.exitCode = verify(path, options);
    });

  withCommon(
    program
      .command('nginx-config')
      .description('print the nginx config for this config (a server block, or a whole nginx.conf) and write its secrets module'),
  )
    .option('--standalone-conf', 'a complete nginx.conf for `nginx -p PREFIX -c FILE -e PREFIX/error.log`')
    .option('--prefix <dir>', 'with --standalone-conf: where nginx keeps pid, logs and temp files', 'nginx-prefix')
    .option('--module-dir <dir>', 'where to write imageproxy_config.js (default: the prefix, or /etc/nginx/imageproxy)')
    .option('--njs-dir <dir>', 'directory holding imageproxy.js (default: this checkout\'s nginx/)')
    .option('--user <user>', 'with --standalone-conf: the user nginx workers run as when started as root (e.g. www-data)')
    .option('--workers <n>', 'with --standalone-conf: worker processes (default auto)')
    .option('--out <file>', 'write the config to this file instead of stdout')
    .action(nginxConfig);

  withCommon(program.command('purge [link]').description('remove a stored image with all its thumbnails (exit 1 if nothing was stored)'))
    .option('--image-url <url>', 'purge by image URL instead of by link')
    .option('--bucket <bucket>', 'with --image-url: only this bucket (default: all)')
    .action(async (link: string | undefined, options: CommonOptions & Record<string, unknown>) => {
      process.exitCode = await purge(link, options);
    });

  withCommon(program.command('init-buckets').description('create the 64 × 64 directories of each bucket (idempotent)')).action(
    initBuckets,
  );

  // Operations commands, one file each in server/cli/ (each exports register(program)).
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
