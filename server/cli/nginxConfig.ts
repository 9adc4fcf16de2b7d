/**
 * `imageproxy nginx-config`: the nginx side of this config. Printing is side-effect free;
 * `--out DIR` writes the config and its secrets module together, so the module is never
 * written somewhere the admin did not name.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import {
  CONFIG_MODULE_NAME,
  renderConfigModule,
  renderServerBlock,
  renderStandaloneConf,
  type NginxRenderInput,
} from '../deploy/nginxConfig.js';
import { blockedDirectoryMessage, firstBlockedDirectory, type Account, type DirectoryOwnership } from '../deploy/pathAccess.js';
import { S3_KEYS_FILE_NAME, renderS3KeysInclude, type NginxS3Input, type S3Keys } from '../deploy/s3Nginx.js';
import type { Config } from '../config/config.js';
import { resolveSecrets } from '../config/secrets.js';
import { s3StoreSettingsOf } from '../config/storageSettings.js';
import { STATE_DIRECTORY } from '../contract/layout.js';
import { normalizeStorePrefix } from '../storage/objectNames.js';
import { UsageError, loadConfig, parsePositiveInteger, withCommon, type CommonOptions } from './common.js';

/** The repository's nginx/ directory (dist/server/cli/ and server/cli/ are both three levels down). */
const NJS_SCRIPT_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'nginx');
/** Where a packaged nginx (Debian's /etc/nginx) finds the module when only the server block is printed. */
const SYSTEM_MODULE_DIR = '/etc/nginx/imageproxy';
const STANDALONE_CONF_NAME = 'nginx.conf';
const SERVER_BLOCK_NAME = 'imageproxy.conf';
/** The account Debian's nginx runs its workers as. */
const DEBIAN_NGINX_USER = 'www-data';

interface NginxConfigOptions extends CommonOptions {
  standaloneConf?: boolean;
  prefix?: string;
  moduleDir?: string;
  njsDir?: string;
  user?: string;
  workers?: string;
  out?: string;
  nginxUser?: string;
  allowGeneratedSecret?: boolean;
}

/**
 * The account nginx's workers will run as: --nginx-user; standalone, the `user` written
 * into the config, else nobody under root and the current user otherwise (nginx
 * ignores `user` unless started as root); a packaged nginx's www-data otherwise.
 */
function workerAccountName(options: NginxConfigOptions): string {
  if (options.nginxUser !== undefined) return options.nginxUser;
  if (options.standaloneConf !== true) return DEBIAN_NGINX_USER;
  if (options.user !== undefined) return options.user.split(' ')[0] ?? options.user;
  return process.getuid?.() === 0 ? 'nobody' : userInfo().username;
}

/** uid and groups from the system's own `id` (NSS included), or null if there is no such user. */
function lookUpAccount(name: string, group: string | undefined): Account | null {
  try {
    const uid = Number(execFileSync('id', ['-u', '--', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
    const gids = execFileSync('id', ['-G', '--', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
      .trim()
      .split(/\s+/)
      .map(Number);
    if (group !== undefined) {
      // `user U G`: nginx runs with group G besides U's own groups.
      const entry = execFileSync('getent', ['group', group], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
      gids.push(Number(entry.split(':')[2]));
    }
    return { name, uid, gids };
  } catch {
    return null;
  }
}

function ownershipOf(directory: string): DirectoryOwnership | null {
  try {
    const stats = statSync(directory);
    return { mode: stats.mode, uid: stats.uid, gid: stats.gid };
  } catch {
    return null;
  }
}

/**
 * Warns (one line on stderr) when nginx's workers could not enter a directory above or
 * at `root` (the tree, or with the bucket nginx's cache directory): a warning, since it
 * may be fixed before nginx starts, or nginx run as another user than assumed.
 */
function warnIfUnreachable(root: string, options: NginxConfigOptions): void {
  const name = workerAccountName(options);
  const group = options.nginxUser === undefined && options.standaloneConf === true ? options.user?.split(' ')[1] : undefined;
  const account = lookUpAccount(name, group);
  if (account === null) {
    process.stderr.write(`imageproxy: warning: no user ${name} on this machine: cannot check that nginx can enter ${root} (--nginx-user names nginx's user)\n`);
    return;
  }
  const blocked = firstBlockedDirectory(root, account, ownershipOf);
  if (blocked !== null) process.stderr.write(`imageproxy: warning: ${blockedDirectoryMessage(blocked, account, root)}\n`);
}

/** nginx's cache of objects when storage.cacheDir is null: beside imageproxy's other state under the root. */
const DEFAULT_CACHE_DIR_UNDER_ROOT = join(STATE_DIRECTORY, 'nginx-cache');

/** The bucket nginx serves from, with storage.type s3; undefined for the tree. */
function bucketInput(config: Config): NginxS3Input | undefined {
  if (config.storage.type !== 's3') return undefined;
  const settings = s3StoreSettingsOf(config.storage);
  return {
    endpoint: settings.endpoint ?? null,
    bucket: settings.bucket,
    region: settings.region,
    prefix: normalizeStorePrefix(settings.prefix),
    forcePathStyle: settings.forcePathStyle,
    cacheDir: resolve(config.storage.cacheDir ?? join(resolve(config.root), DEFAULT_CACHE_DIR_UNDER_ROOT)),
    cacheMaxSize: config.storage.cacheMaxSize,
  };
}

/**
 * nginx's S3 keys from this command's environment, as the AWS tools name them: the
 * config never holds them (server/config/schema.ts), and the rendered config only names
 * the include file they are written to.
 */
function s3KeysFromEnvironment(env: NodeJS.ProcessEnv): S3Keys {
  const accessKeyId = env.AWS_ACCESS_KEY_ID ?? '';
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY ?? '';
  if (accessKeyId === '' || secretAccessKey === '') {
    throw new UsageError(
      `storage.type is s3: nginx signs its requests to the gateway with its own keys, and ${accessKeyId === '' ? 'AWS_ACCESS_KEY_ID' : 'AWS_SECRET_ACCESS_KEY'} is not set. ` +
        `Run nginx-config with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary keys) in its environment: they are written to ${S3_KEYS_FILE_NAME} (0600), never into the config`,
    );
  }
  const sessionToken = env.AWS_SESSION_TOKEN ?? '';
  return { accessKeyId, secretAccessKey, ...(sessionToken === '' ? {} : { sessionToken }) };
}

function nginxConfig(options: NginxConfigOptions): void {
  // The bucket's settings are rendered into nginx's config; the tree is only nginx's root.
  const config = loadConfig(options, {}, 'any');
  const secrets = resolveSecrets(config, false);
  if (secrets.generated && options.allowGeneratedSecret !== true) {
    // nginx would check every link against a secret no site has: each one answers 410.
    throw new UsageError(
      `the only secret is the one serve generated in ${secrets.file ?? 'the root'}: every link your site signs would answer 410. ` +
        "Put the site's secret (Gazelle's IMAGE_CACHE_SECRET) in a secretFile (secretFile in the config, or --secret-file) or in secrets, " +
        'or pass --allow-generated-secret if links are signed with this generated one',
    );
  }
  const standalone = options.standaloneConf === true;
  const outDir = options.out === undefined ? null : resolve(options.out);
  // Standalone, the prefix holds nginx's pid, logs and temp files: by default the output directory.
  const prefix = resolve(options.prefix ?? outDir ?? 'nginx-prefix');
  const moduleDir = resolve(options.moduleDir ?? outDir ?? (standalone ? prefix : SYSTEM_MODULE_DIR));
  if (outDir !== null && options.secret !== undefined && options.secret.length > 0) {
    // The module is a copy of the secrets: it must not be the only one on this machine.
    throw new UsageError('--out with --secret: the module would hold the only copy of that secret; put it in secretFile or the config first');
  }
  const input: NginxRenderInput = {
    nginxListen: config.nginx.listen,
    appListen: config.listen,
    root: resolve(config.root),
    internalPrefix: config.nginx.internalPrefix,
    njsDir: resolve(options.njsDir ?? NJS_SCRIPT_DIR),
    configModuleDir: moduleDir,
    buckets: config.buckets,
    sizes: config.sizes,
    skewSeconds: config.skewSeconds,
    calendarYearWeeks: config.calendarYearWeeks,
    secrets: secrets.secrets,
    placeholder: config.placeholder,
    formats: config.formats,
  };
  const s3 = bucketInput(config);
  if (s3 !== undefined) input.s3 = s3;
  const workers = options.workers === undefined ? undefined : parsePositiveInteger('--workers', options.workers);
  const text = standalone
    ? renderStandaloneConf(input, prefix, {
        ...(options.user === undefined ? {} : { user: options.user }),
        ...(workers === undefined ? {} : { workerProcesses: workers }),
      })
    : renderServerBlock(input);
  const modulePath = join(moduleDir, CONFIG_MODULE_NAME);
  const keysPath = join(moduleDir, S3_KEYS_FILE_NAME);

  if (outDir === null) {
    process.stdout.write(text);
    process.stderr.write(
      `imageproxy: printed the config only; it expects its secrets module at ${modulePath}${s3 === undefined ? '' : ` and nginx's S3 keys at ${keysPath}`}, not written: ` +
        'run with --out DIR to write both\n',
    );
    return;
  }
  const keys = s3 === undefined ? undefined : renderS3KeysInclude(s3KeysFromEnvironment(process.env));
  mkdirSync(outDir, { recursive: true });
  if (standalone) mkdirSync(prefix, { recursive: true });
  // The secrets go into a module only nginx's master reads; never readable by others.
  mkdirSync(moduleDir, { recursive: true, mode: 0o750 });
  writeFileSync(modulePath, renderConfigModule(input), { mode: 0o600 });
  chmodSync(modulePath, 0o600);
  if (keys !== undefined) {
    writeFileSync(keysPath, keys, { mode: 0o600 });
    chmodSync(keysPath, 0o600);
  }
  const confPath = join(outDir, standalone ? STANDALONE_CONF_NAME : SERVER_BLOCK_NAME);
  writeFileSync(confPath, text);
  const written = keys === undefined ? modulePath : `${modulePath} and ${keysPath}`;
  process.stderr.write(`imageproxy: wrote ${confPath} and ${written} (0600, holds the secrets; nginx's master reads it at start and reload)\n`);
  // From the bucket, nginx never reads the tree; it reads and writes its cache.
  warnIfUnreachable(s3 === undefined ? input.root : s3.cacheDir, options);
}

export function register(program: Command): void {
  withCommon(
    program
      .command('nginx-config')
      .description('print the nginx config for this config (a server block, or a whole nginx.conf); --out DIR writes it with its secrets module'),
  )
    .option('--out <dir>', `write ${SERVER_BLOCK_NAME} (or ${STANDALONE_CONF_NAME}) and ${CONFIG_MODULE_NAME} (0600) into this directory`)
    .option('--standalone-conf', 'a complete nginx.conf for `nginx -p PREFIX -c FILE -e PREFIX/error.log`')
    .option('--prefix <dir>', 'with --standalone-conf: where nginx keeps pid, logs and temp files (default: --out, else ./nginx-prefix)')
    .option('--module-dir <dir>', `where the secrets module lives (default: --out, else the prefix, or ${SYSTEM_MODULE_DIR})`)
    .option('--njs-dir <dir>', "directory holding imageproxy.js (default: this checkout's nginx/)")
    .option('--user <user>', 'with --standalone-conf: the user nginx workers run as when started as root (e.g. www-data)')
    .option('--workers <n>', 'with --standalone-conf: worker processes (default auto)')
    .option('--allow-generated-secret', 'render even when the only secret is the one serve generated under the root (links must then be signed with it)')
    .option(
      '--nginx-user <user>',
      `with --out: warn unless this user (nginx's workers) can enter every directory down to the root (default ${DEBIAN_NGINX_USER}; standalone: --user, else nobody as root)`,
    )
    .action(nginxConfig);
}
