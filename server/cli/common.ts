/**
 * What every command shares: the common flags (--config, --secret, --secret-file, --root), loading the
 * config from them, argument parsers that answer with a one-line usage error, and the
 * exit codes. Commands live one per file beside this one (init-buckets inline in
 * server/cli.ts, which registers them all), next to shared helpers like this one.
 */
import type { Command } from 'commander';
import { resolve } from 'node:path';
import { ConfigError, buildConfig, envLayer, readConfigFile, type Config, type ConfigLayer } from '../config/config.js';
import { pseudoFilesystemOf } from '../tree/pseudoFilesystem.js';
import { refuseReadableConfigSecrets } from '../config/secrets.js';
import type { ProgressCounts } from './progress.js';

/**
 * Exit codes of every command:
 * 0 done; 1 done, but something failed or the answer is negative (verify: not valid,
 * purge: nothing stored, bulk commands: some entries failed); 2 a usage or config error,
 * nothing done; 130 interrupted (SIGINT/SIGTERM), what was finished is kept and reported.
 */
export const EXIT_OK = 0;
export const EXIT_FAILURES = 1;
export const EXIT_USAGE = 2;
export const EXIT_INTERRUPTED = 130;

/** A takedown command's exit code by its items: 1 when one failed or none changed anything. */
export function exitCodeOfItems(counts: ProgressCounts, interrupted: boolean): number {
  if (interrupted) return EXIT_INTERRUPTED;
  return counts.failed > 0 || counts.ok === 0 ? EXIT_FAILURES : EXIT_OK;
}

/** The help of `--allow-private-networks`, on every command that fetches (serve, populate). */
export const ALLOW_PRIVATE_NETWORKS_HELP = 'allow fetching from private, loopback and link-local addresses';

/** A wrong flag or value: the CLI prints `imageproxy: <message>` and exits 2. */
export class UsageError extends Error {}

export interface CommonOptions {
  config?: string;
  secret?: string[];
  secretFile?: string;
  root?: string;
}

/** The config as the common flags (and `flags`, a command's own layer) make it. */
export function loadConfig(options: CommonOptions, flags: ConfigLayer = {}): Config {
  const file = options.config === undefined ? undefined : readConfigFile(options.config);
  if (options.config !== undefined && file !== undefined) refuseReadableConfigSecrets(options.config, file);
  const flagLayer: ConfigLayer = { ...flags };
  if (options.secret !== undefined && options.secret.length > 0) {
    if (options.secretFile !== undefined) throw new UsageError('--secret and --secret-file: give one of them');
    flagLayer.secrets = options.secret;
    flagLayer.secretFile = null;
  }
  if (options.secretFile !== undefined) {
    flagLayer.secretFile = options.secretFile;
    flagLayer.secrets = [];
  }
  if (typeof options.root === 'string') flagLayer.root = options.root;
  const config = buildConfig({ file, env: envLayer(process.env), flags: flagLayer });
  const pseudo = pseudoFilesystemOf(config.root);
  if (pseudo !== null) {
    throw new ConfigError('root', `${resolve(config.root)} lies on ${pseudo}, a kernel pseudo filesystem that stores no files: choose a directory on a disk`);
  }
  return config;
}

export function parseInstant(text: string | undefined): number {
  if (text === undefined) return Date.now();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const parsed = Date.parse(text);
  if (Number.isNaN(parsed)) throw new UsageError(`--at: ${text} is neither an ISO date nor epoch seconds`);
  return parsed;
}

export function parsePositiveInteger(flag: string, text: string): number {
  if (!/^\d+$/.test(text) || Number(text) === 0) throw new UsageError(`${flag}: ${text} is not a positive integer`);
  return Number(text);
}

/** commander accumulator for repeatable flags. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** The bucket named by a flag, refused unless configured. */
export function configuredBucket(config: Config, flag: string, bucket: string): string {
  if (!Object.hasOwn(config.buckets, bucket)) {
    throw new UsageError(`${flag}: ${bucket} is not a configured bucket (${Object.keys(config.buckets).join(', ')})`);
  }
  return bucket;
}

export function withCommon(command: Command): Command {
  return command
    .option('--config <file>', 'JSON config file')
    .option('--secret <secret>', 'signing secret (repeat for several; overrides the config). Every user sees it in ps: prefer --secret-file', collect)
    .option('--secret-file <file>', 'file of signing secrets, one a line, not readable by every user (overrides the config)')
    .option('--root <dir>', 'bucket-tree root (overrides the config)');
}
