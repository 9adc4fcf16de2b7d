/**
 * What every command shares: the common flags (--config, --secret, --secret-file, --root), loading the
 * config from them, the flags that mirror config keys (derived from server/config/schema.ts),
 * argument parsers that answer with a one-line usage error, and the exit codes. Commands live one per file beside this one (init-buckets inline in
 * server/cli.ts, which registers them all), next to shared helpers like this one.
 */
import { Option, type Command } from 'commander';
import { resolve } from 'node:path';
import { ConfigError, buildConfig, envLayer, parseSettingText, readConfigFile, setKey, type Config, type ConfigLayer } from '../config/config.js';
import { settingOf, type Setting } from '../config/schema.js';
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


/** A wrong flag or value: the CLI prints `imageproxy: <message>` and exits 2. */
export class UsageError extends Error {}

export interface CommonOptions {
  config?: string;
  secret?: string[];
  secretFile?: string;
  root?: string;
}

/** The config keys every command mirrors as a flag (beside --config, --secret, --secret-file). */
const COMMON_CONFIG_FLAGS = ['root'] as const;

type FlaggedSetting = Setting & { meta: { flag: string } };

function flagged(key: string): FlaggedSetting {
  const setting = settingOf(key);
  const { flag } = setting.meta;
  if (flag === undefined) throw new Error(`config schema: ${key} has no flag`);
  return { ...setting, meta: { ...setting.meta, flag } };
}

/** A key's flag: the schema's flag, the key's doc as help, its choices. */
function optionOf(setting: FlaggedSetting): Option {
  const option = new Option(setting.meta.flag, setting.meta.doc);
  return setting.choices === null ? option : option.choices(setting.choices);
}

/** Adds the flags of config `keys` to a command. */
export function withConfigFlags(command: Command, keys: readonly string[]): Command {
  for (const key of keys) command.addOption(optionOf(flagged(key)));
  return command;
}

/**
 * The value a flag's text gives its key. Integers are digits only, refused below the
 * key's minimum with a usage error naming the flag (`--max-bytes: 0 is not a positive
 * integer`); the config check names the key for a value above its maximum.
 */
function flagValue(setting: Setting, flag: string, raw: string | true): unknown {
  if (raw === true) return true;
  if (setting.form === 'number') {
    const min = setting.range?.min ?? 0;
    if (!/^\d+$/.test(raw) || Number(raw) < min) {
      throw new UsageError(`${flag}: ${raw} is not ${min === 1 ? 'a positive integer' : `an integer from ${min}`}`);
    }
    return Number(raw);
  }
  return parseSettingText(flag, setting.key, setting.form, setting.meta.nullWord ?? null, raw);
}

/** The config layer the flags of `keys` make from a command's parsed options. */
export function configFlagLayer(options: object, keys: readonly string[]): ConfigLayer {
  const values = options as Readonly<Record<string, unknown>>;
  const layer: ConfigLayer = {};
  for (const key of keys) {
    const setting = flagged(key);
    const option = optionOf(setting);
    const raw = values[option.attributeName()];
    if (typeof raw === 'string' || raw === true) setKey(layer, key, flagValue(setting, option.long ?? setting.meta.flag, raw));
  }
  return layer;
}

/**
 * Why a command that works on the tree cannot run with `storage.type: "s3"`: working on
 * the tree while the config names a bucket would look like working on the bucket
 * (docs/storage.md says which commands speak to a bucket).
 */
const BUCKET_STORAGE_REFUSAL =
  'is "s3": this command works on the tree only; on a bucket work serve, populate, purge, block, unblock, stats, check, import-legacy and nginx-config, and `imageproxy migrate-storage` copies between tree and bucket. Set storage.type to "tree" (the default) to work on the tree';

/** The commands that work on a bucket as well as on the tree (docs/storage.md): each passes its name as its StorageUse. */
const BUCKET_COMMANDS = ['purge', 'block', 'unblock', 'stats', 'check', 'import-legacy'] as const;

/** Which storage a command works with: the tree only (the default), any (commands that never touch the images), or one of BUCKET_COMMANDS. */
export type StorageUse = 'tree' | 'any' | (typeof BUCKET_COMMANDS)[number];

/** The config as the common flags (and `flags`, a command's own layer) make it. */
export function loadConfig(options: CommonOptions, flags: ConfigLayer = {}, storageUse: StorageUse = 'tree'): Config {
  const file = options.config === undefined ? undefined : readConfigFile(options.config);
  if (options.config !== undefined && file !== undefined) refuseReadableConfigSecrets(options.config, file);
  const flagLayer: ConfigLayer = { ...flags, ...configFlagLayer(options, COMMON_CONFIG_FLAGS) };
  if (options.secret !== undefined && options.secret.length > 0) {
    if (options.secretFile !== undefined) throw new UsageError('--secret and --secret-file: give one of them');
    flagLayer.secrets = options.secret;
    flagLayer.secretFile = null;
  }
  if (options.secretFile !== undefined) {
    flagLayer.secretFile = options.secretFile;
    flagLayer.secrets = [];
  }
  const config = buildConfig({ file, env: envLayer(process.env), flags: flagLayer });
  const worksOnBucket = storageUse === 'any' || (BUCKET_COMMANDS as readonly string[]).includes(storageUse);
  if (!worksOnBucket && config.storage.type !== 'tree') throw new ConfigError('storage.type', BUCKET_STORAGE_REFUSAL);
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
  command
    .option('--config <file>', 'JSON config file')
    .option('--secret <secret>', 'signing secret (repeat for several; overrides the config). Every user sees it in ps: prefer --secret-file', collect)
    .option('--secret-file <file>', 'file of signing secrets, one a line, not readable by every user (overrides the config)');
  return withConfigFlags(command, COMMON_CONFIG_FLAGS);
}
