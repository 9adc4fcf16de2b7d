/**
 * Configuration: one typed object, built as defaults < JSON file < IMAGEPROXY_* env <
 * command-line flags, then validated once with errors that name the key. Pure except
 * `readConfigFile`, the one function that touches the disk.
 */
import { readFileSync } from 'node:fs';
import { DEFAULT_QUALITY, type EngineName } from '../images/engine.js';
import { normaliseHost } from '../takedown/blocklist.js';
import { parseAllowList } from '../fetch/netPolicy.js';

export type Delivery = 'direct' | 'accel';
export type SingleFlightScope = 'host' | 'tree';

export type { EngineName };

export interface BucketConfig {
  /** Also accept signatures over ext_url without the bucket prefix (links from before buckets). */
  legacySignatures: boolean;
}

export interface Limits {
  maxBytes: number;
  maxPixels: number;
  connectTimeoutMs: number;
  totalTimeoutMs: number;
  maxRedirects: number;
  /** Origin fetches running at once (each holds up to maxBytes in memory until stored). */
  maxConcurrentFetches: number;
  /** Fetches waiting for a slot; past this, `busy` (503) at once. */
  maxQueuedFetches: number;
  /** Thumbnails being made at once. */
  maxConcurrentResizes: number;
  /**
   * Thumbnails waiting (for a slot, or for their original's fetch); past this, `busy` at
   * once. Before the resize slots existed it counted running ones too.
   */
  maxQueuedResizes: number;
  /**
   * Bytes of originals that thumbnails waiting for a resize slot may hold, all together;
   * past it a waiting thumbnail holds none and reads its original back when its turn comes.
   */
  maxWaitingResizeBytes: number;
  /** Longest wait in either queue before `busy`; below nginx's proxy_read_timeout (120 s). */
  maxQueueWaitMs: number;
}

export interface Config {
  listen: string;
  root: string;
  secrets: string[];
  secretFile: string | null;
  buckets: Record<string, BucketConfig>;
  sizes: number[];
  skewSeconds: number;
  /** Also accept keys made with the calendar year (`date('YW')`, Gazelle before 2024-12-30). */
  calendarYearWeeks: boolean;
  delivery: Delivery;
  engine: EngineName;
  allowPrivateNetworks: boolean;
  /** Addresses or CIDRs allowed although the policy blocks them (an origin on your LAN). */
  allowedAddresses: string[];
  /** Origin hosts refused with 451 `blocked` before any fetch (merged with the blocklist's hosts). */
  blockedHosts: string[];
  limits: Limits;
  /** How long a request waits for another request's fetch of the same image. */
  singleFlightWaitMs: number;
  /**
   * Which processes fetch a new image once between them (server/fetch/singleFlight.ts):
   * `host` those of this machine (a lock in memory, freed when its holder dies); `tree`
   * every machine sharing the tree over a network filesystem (a lock directory per miss).
   */
  singleFlightScope: SingleFlightScope;
  /** Temp files older than this are leftovers of a crash and are removed. */
  tempMaxAgeSeconds: number;
  /** Period of the heal pass (stale temps and locks, missing sidecars, damaged files); 0: none, not even at start. */
  healIntervalSeconds: number;
  /** Stored images each heal pass reads whole (digest, or decode), in turn through the tree (server/tree/healSample.ts); 0: none. */
  healVerifyPerPass: number;
  /** Period of the background walk behind the tree gauges (`imageproxy_tree_*`); 0: no walk. */
  statsRefreshSeconds: number;
  backoff: { initialSeconds: number; maxSeconds: number };
  quality: { jpeg: number; webp: number; avif: number };
  /** sharp's JPEG thumbnails through mozjpeg (trellis quantisation, progressive): smaller files, more CPU per thumbnail. */
  mozjpeg: boolean;
  userAgent: string;
  /** Remove EXIF, XMP, IPTC and comments from originals before storing them (pixels untouched). */
  stripMetadata: boolean;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  nginx: {
    listen: string;
    internalPrefix: string;
    /** nginx's cache of link verdicts (proxy_cache); null: `{prefix}/verdict-cache` standalone, /var/cache/nginx/imageproxy for a packaged nginx. */
    cacheDir: string | null;
    /** Bound of that cache on disk, nginx size syntax (`256m`, `1g`). */
    cacheMaxSize: string;
    /** Longest life of a cached verdict, 0 (no cache: every hit is checked) to 3 seconds. */
    cacheSeconds: number;
  };
  /** The operators' listener (`/metrics`, `/healthz`, `/readyz`); null: none. */
  admin: { listen: string | null };
  /** On SIGTERM/SIGINT, how long requests in flight may still finish before they answer 503 `shutting_down`. */
  shutdownGraceMs: number;
  /** Processes `serve` runs on the one `listen` port (node:cluster); a crashed one is restarted. */
  workers: number;
}

const DEFAULT_MAX_BYTES = 2 * 1024 * 1024; // as imageproxy-py
const DEFAULT_MAX_CONCURRENT_RESIZES = 4;
/** Misses waiting in each queue: what the rendered nginx config's connections can hold. */
const DEFAULT_MAX_QUEUED = 2048;

/** Defaults, each with its reason. */
export const DEFAULT_CONFIG: Config = {
  // Loopback: in production nginx sits in front; standalone, put it behind your own proxy.
  listen: '127.0.0.1:8091',
  root: './data',
  secrets: [],
  secretFile: null,
  // Gazelle's CacheBucket enum: standard, forum, torrent group.
  buckets: { i: { legacySignatures: false }, f: { legacySignatures: false }, t: { legacySignatures: false } },
  // The sizes Gazelle's templates ask for.
  sizes: [150, 200, 250, 500],
  // Signers in timezones ahead of UTC start a new week up to this much earlier.
  skewSeconds: 3600,
  // Off: with the calendar rule a link signed in ISO week 1 verifies again in the last
  // days of December of that year. Only sites still running Gazelle from before
  // 2024-12-30 (date('YW')) need it, at the price of that replay.
  calendarYearWeeks: false,
  delivery: 'direct',
  engine: 'sharp',
  allowPrivateNetworks: false,
  // Narrower than allowPrivateNetworks: one intranet origin, not the whole private space.
  allowedAddresses: [],
  // Nothing is refused until an operator says so; takedowns usually go to the tree's
  // blocklist (`imageproxy block --host`), this list is for hosts fixed by deployment.
  blockedHosts: [],
  limits: {
    maxBytes: DEFAULT_MAX_BYTES,
    maxPixels: 50_000_000, // all frames of an animation counted
    connectTimeoutMs: 5000,
    totalTimeoutMs: 30_000,
    maxRedirects: 3,
    // Fetches wait on the network, not the CPU, so several overlap well; each holds its
    // body (up to maxBytes) until stored, so this times maxBytes bounds that memory.
    maxConcurrentFetches: 8,
    // A waiting miss holds its socket and a little bookkeeping, never image bytes:
    // refusing it would protect nothing, so a burst waits. The count bounds that memory
    // and the descriptors (README, Benchmarks); maxQueueWaitMs bounds the wait.
    maxQueuedFetches: DEFAULT_MAX_QUEUED,
    // Resizing is CPU work, but a resize also waits between its steps (decode, resize,
    // encode, handing bytes back): two per core of a small box keep the cores busy.
    // sharp runs on libuv's pool of four threads, so more than four would only queue
    // there, holding their decoded input.
    maxConcurrentResizes: DEFAULT_MAX_CONCURRENT_RESIZES,
    // As for fetches: a waiting thumbnail holds no bytes beyond maxWaitingResizeBytes,
    // all together; the wait is bounded by maxQueueWaitMs, whichever engine is slow.
    maxQueuedResizes: DEFAULT_MAX_QUEUED,
    // As much as the running resizes may hold (one largest original each): a short queue
    // keeps its bytes instead of reading them back a moment later.
    maxWaitingResizeBytes: DEFAULT_MAX_CONCURRENT_RESIZES * DEFAULT_MAX_BYTES,
    // Well below the rendered nginx proxy_read_timeout (120 s): a client gets `busy` with
    // Retry-After, not nginx's 504 after work it can no longer receive.
    maxQueueWaitMs: 20_000,
  },
  singleFlightWaitMs: 30_000,
  singleFlightScope: 'host',
  tempMaxAgeSeconds: 3600,
  // A day: what a crash leaves is healed by the pass at start, and the app moves a
  // damaged original aside when it looks one up; the periodic pass is for what nginx
  // alone serves, and it reads the head of every image and every sidecar of the tree.
  healIntervalSeconds: 86_400,
  // Bit rot inside a file of the right size and type is found only by reading it whole.
  // At one pass a day a tree of a million images is covered in 20 days; the reads are
  // the cost (the digest is cheap), and only thumbnails from before the records are decoded.
  healVerifyPerPass: 50_000,
  // Ten minutes: a walk reads every directory entry of the tree, so on a tree of millions
  // of files it is real disk work; tree figures change slowly, and dashboards look at
  // trends, so fresher gauges would cost I/O for nothing.
  statsRefreshSeconds: 600,
  // imageproxy-py retried a failing origin every minute; we double up to a day.
  backoff: { initialSeconds: 60, maxSeconds: 86_400 },
  // Reasons beside DEFAULT_QUALITY (images/engine.ts).
  quality: { ...DEFAULT_QUALITY },
  // On: a thumbnail is encoded once and served on every hit after, so a smaller file
  // (fewer bytes on every hit) is worth the extra encoding time on its one miss.
  mozjpeg: true,
  // Recognisable in origins' logs; set your site's name and a contact here.
  userAgent: 'imageproxy/0.1 (Gazelle image cache)',
  // On: a photo's EXIF (GPS position, camera serial, owner) would otherwise reach every
  // visitor, and imageproxy-py, through imgproxy, stored stripped images too.
  stripMetadata: true,
  logLevel: 'info',
  // The verdict cache is off by default: it makes a repeated hit skip the njs check, but
  // a link's first hit within its lifetime pays a subrequest on top of the check (README,
  // Benchmarks), and a flood of new links can fill its keys zone. Turn it on (2: a hot
  // link costs one check per few seconds) where most hits repeat a link within seconds.
  // Verdicts are a few hundred bytes: 256m fits a tmpfs and far more links than 10 s see.
  nginx: { listen: '127.0.0.1:8080', internalPrefix: '/_imageproxy', cacheDir: null, cacheMaxSize: '256m', cacheSeconds: 0 },
  // Metrics and readiness on a listener of their own, loopback only: a path-based block
  // in front of a router that ignores case and trailing slashes leaks, a socket cannot.
  admin: { listen: '127.0.0.1:9091' },
  // Most misses end within a few seconds; ten lets them finish and still leaves systemd's
  // TimeoutStopSec (15 s in contrib/imageproxy.service) time for the 503s and the exit.
  shutdownGraceMs: 10_000,
  // One process: nginx serves the hits, and misses are bounded by the network and the
  // resize gate; more workers are for standalone delivery or many cores.
  workers: 1,
};

export class ConfigError extends Error {
  constructor(
    readonly key: string,
    message: string,
  ) {
    super(`config ${key}: ${message}`);
    this.name = 'ConfigError';
  }
}

/** A partial config as read from a file, the environment or flags (not yet validated). */
export type ConfigLayer = Record<string, unknown>;

export function readConfigFile(path: string): ConfigLayer {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError('--config', `cannot read ${path}: ${(error as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new ConfigError('--config', `${path} is not valid JSON: ${(error as Error).message}`);
  }
  if (!isPlainObject(parsed)) throw new ConfigError('--config', `${path} must hold a JSON object`);
  return parsed;
}

/**
 * Environment variables and the config key each one sets. Lists are comma-separated;
 * `IMAGEPROXY_BUCKETS` is `i,f,t,old:legacy`.
 */
export const ENV_KEYS: ReadonlyArray<{
  env: string;
  key: string;
  kind: 'string' | 'number' | 'boolean' | 'list' | 'numberList' | 'buckets' | 'listenOrOff';
}> = [
  { env: 'IMAGEPROXY_LISTEN', key: 'listen', kind: 'string' },
  { env: 'IMAGEPROXY_ROOT', key: 'root', kind: 'string' },
  { env: 'IMAGEPROXY_SECRETS', key: 'secrets', kind: 'list' },
  { env: 'IMAGEPROXY_SECRET_FILE', key: 'secretFile', kind: 'string' },
  { env: 'IMAGEPROXY_BUCKETS', key: 'buckets', kind: 'buckets' },
  { env: 'IMAGEPROXY_SIZES', key: 'sizes', kind: 'numberList' },
  { env: 'IMAGEPROXY_SKEW_SECONDS', key: 'skewSeconds', kind: 'number' },
  { env: 'IMAGEPROXY_CALENDAR_YEAR_WEEKS', key: 'calendarYearWeeks', kind: 'boolean' },
  { env: 'IMAGEPROXY_DELIVERY', key: 'delivery', kind: 'string' },
  { env: 'IMAGEPROXY_ENGINE', key: 'engine', kind: 'string' },
  { env: 'IMAGEPROXY_ALLOW_PRIVATE_NETWORKS', key: 'allowPrivateNetworks', kind: 'boolean' },
  { env: 'IMAGEPROXY_ALLOWED_ADDRESSES', key: 'allowedAddresses', kind: 'list' },
  { env: 'IMAGEPROXY_BLOCKED_HOSTS', key: 'blockedHosts', kind: 'list' },
  { env: 'IMAGEPROXY_MAX_BYTES', key: 'limits.maxBytes', kind: 'number' },
  { env: 'IMAGEPROXY_MAX_PIXELS', key: 'limits.maxPixels', kind: 'number' },
  { env: 'IMAGEPROXY_CONNECT_TIMEOUT_MS', key: 'limits.connectTimeoutMs', kind: 'number' },
  { env: 'IMAGEPROXY_TOTAL_TIMEOUT_MS', key: 'limits.totalTimeoutMs', kind: 'number' },
  { env: 'IMAGEPROXY_MAX_REDIRECTS', key: 'limits.maxRedirects', kind: 'number' },
  { env: 'IMAGEPROXY_MAX_QUEUED_RESIZES', key: 'limits.maxQueuedResizes', kind: 'number' },
  { env: 'IMAGEPROXY_MAX_WAITING_RESIZE_BYTES', key: 'limits.maxWaitingResizeBytes', kind: 'number' },
  { env: 'IMAGEPROXY_MAX_CONCURRENT_FETCHES', key: 'limits.maxConcurrentFetches', kind: 'number' },
  { env: 'IMAGEPROXY_MAX_QUEUED_FETCHES', key: 'limits.maxQueuedFetches', kind: 'number' },
  { env: 'IMAGEPROXY_MAX_CONCURRENT_RESIZES', key: 'limits.maxConcurrentResizes', kind: 'number' },
  { env: 'IMAGEPROXY_MAX_QUEUE_WAIT_MS', key: 'limits.maxQueueWaitMs', kind: 'number' },
  { env: 'IMAGEPROXY_SINGLE_FLIGHT_WAIT_MS', key: 'singleFlightWaitMs', kind: 'number' },
  { env: 'IMAGEPROXY_SINGLE_FLIGHT_SCOPE', key: 'singleFlightScope', kind: 'string' },
  { env: 'IMAGEPROXY_STATS_REFRESH_SECONDS', key: 'statsRefreshSeconds', kind: 'number' },
  { env: 'IMAGEPROXY_HEAL_INTERVAL_SECONDS', key: 'healIntervalSeconds', kind: 'number' },
  { env: 'IMAGEPROXY_HEAL_VERIFY_PER_PASS', key: 'healVerifyPerPass', kind: 'number' },
  { env: 'IMAGEPROXY_USER_AGENT', key: 'userAgent', kind: 'string' },
  { env: 'IMAGEPROXY_STRIP_METADATA', key: 'stripMetadata', kind: 'boolean' },
  { env: 'IMAGEPROXY_MOZJPEG', key: 'mozjpeg', kind: 'boolean' },
  { env: 'IMAGEPROXY_LOG_LEVEL', key: 'logLevel', kind: 'string' },
  { env: 'IMAGEPROXY_NGINX_LISTEN', key: 'nginx.listen', kind: 'string' },
  { env: 'IMAGEPROXY_NGINX_INTERNAL_PREFIX', key: 'nginx.internalPrefix', kind: 'string' },
  { env: 'IMAGEPROXY_NGINX_CACHE_DIR', key: 'nginx.cacheDir', kind: 'string' },
  { env: 'IMAGEPROXY_ADMIN_LISTEN', key: 'admin.listen', kind: 'listenOrOff' },
  { env: 'IMAGEPROXY_SHUTDOWN_GRACE_MS', key: 'shutdownGraceMs', kind: 'number' },
  { env: 'IMAGEPROXY_WORKERS', key: 'workers', kind: 'number' },
];

/** Sets a dotted key (`limits.maxBytes`) in a layer. */
export function setKey(layer: ConfigLayer, dottedKey: string, value: unknown): void {
  const parts = dottedKey.split('.');
  let target: ConfigLayer = layer;
  for (const part of parts.slice(0, -1)) {
    const next = target[part];
    if (!isPlainObject(next)) target[part] = {};
    target = target[part] as ConfigLayer;
  }
  target[parts[parts.length - 1] as string] = value;
}

function parseEnvValue(name: string, key: string, kind: (typeof ENV_KEYS)[number]['kind'], raw: string): unknown {
  const items = raw.split(',').map((item) => item.trim()).filter((item) => item !== '');
  switch (kind) {
    case 'string':
      return raw;
    case 'listenOrOff':
      return raw.trim() === '' || raw.trim().toLowerCase() === 'off' ? null : raw;
    case 'number': {
      const value = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(value)) throw new ConfigError(key, `${name}=${raw} is not a number`);
      return value;
    }
    case 'boolean':
      if (/^(1|true|yes|on)$/i.test(raw)) return true;
      if (/^(0|false|no|off)$/i.test(raw)) return false;
      throw new ConfigError(key, `${name}=${raw} is not a boolean (true/false)`);
    case 'list':
      return items;
    case 'numberList':
      return items.map((item) => {
        const value = Number(item);
        if (!Number.isFinite(value)) throw new ConfigError(key, `${name}: ${item} is not a number`);
        return value;
      });
    case 'buckets':
      return Object.fromEntries(
        items.map((item) => {
          const [bucketName = '', flag, ...extra] = item.split(':');
          if (extra.length > 0 || (flag !== undefined && flag !== 'legacy')) {
            throw new ConfigError(key, `${name}: ${item}: only ':legacy' may follow a bucket name`);
          }
          return [bucketName, { legacySignatures: flag === 'legacy' }];
        }),
      );
  }
}

export function envLayer(env: NodeJS.ProcessEnv): ConfigLayer {
  const layer: ConfigLayer = {};
  // A misspelt variable (IMAGEPROXY_SECRET for IMAGEPROXY_SECRETS) must not pass silently:
  // serve would generate a random secret and refuse every link.
  for (const name of Object.keys(env)) {
    if (name.startsWith('IMAGEPROXY_') && !ENV_KEYS.some((entry) => entry.env === name)) {
      throw new ConfigError(name, `unknown environment variable (known: ${ENV_KEYS.map((entry) => entry.env).join(', ')})`);
    }
  }
  for (const { env: name, key, kind } of ENV_KEYS) {
    const raw = env[name];
    if (raw !== undefined) setKey(layer, key, parseEnvValue(name, key, kind, raw));
  }
  return layer;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Deep merge for plain objects; arrays and scalars of later layers replace earlier ones. */
function mergeLayers(base: ConfigLayer, layer: ConfigLayer): ConfigLayer {
  const merged: ConfigLayer = { ...base };
  for (const [key, value] of Object.entries(layer)) {
    if (value === undefined) continue;
    const previous = Object.hasOwn(merged, key) ? merged[key] : undefined;
    // Buckets are replaced as a whole: a file listing buckets means exactly those buckets.
    const next = key !== 'buckets' && isPlainObject(previous) && isPlainObject(value) ? mergeLayers(previous, value) : value;
    // defineProperty, not `merged[key] =`: a JSON `__proto__` key must stay an own key (and be
    // refused as unknown) instead of silently replacing the prototype.
    Object.defineProperty(merged, key, { value: next, enumerable: true, writable: true, configurable: true });
  }
  return merged;
}

// ---- validation ----------------------------------------------------------------------

/** An nginx size: digits with an optional k, m or g (`256m`). */
function expectNginxSize(key: string, value: unknown): string {
  const text = expectString(key, value);
  if (!/^[1-9][0-9]{0,9}[kmg]?$/.test(text)) throw new ConfigError(key, `must be a size such as 256m or 1g, got ${JSON.stringify(text)}`);
  return text;
}

// Shared with server/deploy/nginxConfig.ts, which checks its own input by the same rules.
export const BUCKET_NAME_PATTERN = /^[A-Za-z0-9_-]{1,32}$/;
export const PREFIX_PATTERN = /^\/[A-Za-z0-9_-]+$/;
const LISTEN_PATTERN = /^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/;

function expectObject(key: string, value: unknown): Record<string, unknown> {
  if (!isPlainObject(value)) throw new ConfigError(key, 'must be an object');
  return value;
}

function expectString(key: string, value: unknown): string {
  if (typeof value !== 'string') throw new ConfigError(key, 'must be a string');
  return value;
}

export function expectListen(key: string, value: unknown): string {
  const text = expectString(key, value);
  const match = LISTEN_PATTERN.exec(text);
  if (match === null || Number(match[1]) > 65535) {
    throw new ConfigError(key, `must be host:port (e.g. 127.0.0.1:8091), got ${JSON.stringify(text)}`);
  }
  return text;
}

export function expectInteger(key: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(key, `must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return value;
}

function expectBoolean(key: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw new ConfigError(key, `must be true or false, got ${JSON.stringify(value)}`);
  return value;
}

function expectOneOf<T extends string>(key: string, value: unknown, allowed: readonly T[]): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw new ConfigError(key, `must be one of ${allowed.join(', ')}, got ${JSON.stringify(value)}`);
  }
  return value as T;
}

function expectAddressList(key: string, value: unknown): string[] {
  if (!Array.isArray(value)) throw new ConfigError(key, 'must be a list of IP addresses or CIDRs');
  return value.map((entry, index) => {
    const text = expectString(`${key}[${index}]`, entry);
    try {
      parseAllowList([text]);
    } catch {
      throw new ConfigError(`${key}[${index}]`, `${JSON.stringify(text)} is not an IP address or CIDR`);
    }
    return text;
  });
}

function expectHostList(key: string, value: unknown): string[] {
  if (!Array.isArray(value)) throw new ConfigError(key, 'must be a list of host names');
  return value.map((entry, index) => {
    const host = normaliseHost(expectString(`${key}[${index}]`, entry));
    if (host === null) throw new ConfigError(`${key}[${index}]`, `${JSON.stringify(entry)} is not a host name or IP address`);
    return host;
  });
}

function rejectUnknownKeys(key: string, value: Record<string, unknown>, known: object): void {
  for (const name of Object.keys(value)) {
    // Own keys only: `in` would let `constructor`, `toString` or `__proto__` through.
    if (!Object.hasOwn(known, name)) throw new ConfigError(key === '' ? name : `${key}.${name}`, 'unknown key');
  }
}

export function validateConfig(raw: ConfigLayer): Config {
  rejectUnknownKeys('', raw, DEFAULT_CONFIG);
  const secretsRaw = raw.secrets;
  if (!Array.isArray(secretsRaw)) throw new ConfigError('secrets', 'must be a list of strings');
  const secrets = secretsRaw.map((secret, index) => {
    const text = expectString(`secrets[${index}]`, secret);
    if (text.length === 0) throw new ConfigError(`secrets[${index}]`, 'must not be empty');
    return text;
  });
  const bucketsRaw = expectObject('buckets', raw.buckets);
  const buckets: Record<string, BucketConfig> = {};
  for (const [name, value] of Object.entries(bucketsRaw)) {
    const key = `buckets.${name}`;
    if (!BUCKET_NAME_PATTERN.test(name)) throw new ConfigError(key, 'bucket names are 1-32 of A-Z a-z 0-9 _ -');
    const bucket = expectObject(key, value ?? {});
    rejectUnknownKeys(key, bucket, { legacySignatures: true });
    buckets[name] = {
      legacySignatures: bucket.legacySignatures === undefined ? false : expectBoolean(`${key}.legacySignatures`, bucket.legacySignatures),
    };
  }
  if (Object.keys(buckets).length === 0) throw new ConfigError('buckets', 'at least one bucket is needed');
  if (!Array.isArray(raw.sizes) || raw.sizes.length === 0) throw new ConfigError('sizes', 'must be a non-empty list of integers');
  const sizes = raw.sizes.map((size, index) => expectInteger(`sizes[${index}]`, size, 1, 10_000));

  const limits = expectObject('limits', raw.limits);
  rejectUnknownKeys('limits', limits, DEFAULT_CONFIG.limits);
  const backoff = expectObject('backoff', raw.backoff);
  rejectUnknownKeys('backoff', backoff, DEFAULT_CONFIG.backoff);
  const quality = expectObject('quality', raw.quality);
  rejectUnknownKeys('quality', quality, DEFAULT_CONFIG.quality);
  const nginx = expectObject('nginx', raw.nginx);
  rejectUnknownKeys('nginx', nginx, DEFAULT_CONFIG.nginx);
  const admin = expectObject('admin', raw.admin);
  rejectUnknownKeys('admin', admin, DEFAULT_CONFIG.admin);
  const listen = expectListen('listen', raw.listen);
  const adminListen = admin.listen === null ? null : expectListen('admin.listen', admin.listen);
  if (adminListen !== null && adminListen === listen && splitListen(listen).port !== 0) {
    throw new ConfigError('admin.listen', 'must differ from listen (metrics stay off the public listener); null turns it off');
  }
  const internalPrefix = expectString('nginx.internalPrefix', nginx.internalPrefix);
  if (!PREFIX_PATTERN.test(internalPrefix)) {
    throw new ConfigError('nginx.internalPrefix', 'must be / followed by letters, digits, _ or - (e.g. /_imageproxy)');
  }
  if (Object.hasOwn(buckets, internalPrefix.slice(1))) {
    throw new ConfigError('nginx.internalPrefix', 'must differ from every bucket name');
  }
  const secretFile = raw.secretFile === null ? null : expectString('secretFile', raw.secretFile);
  const root = expectString('root', raw.root);
  if (root === '') throw new ConfigError('root', 'must not be empty');
  const userAgent = expectString('userAgent', raw.userAgent);
  if (/[\r\n]/.test(userAgent)) throw new ConfigError('userAgent', 'must be one line');

  const backoffInitial = expectInteger('backoff.initialSeconds', backoff.initialSeconds, 1);
  return {
    listen,
    root,
    secrets,
    secretFile,
    buckets,
    sizes: [...new Set(sizes)].sort((a, b) => a - b),
    skewSeconds: expectInteger('skewSeconds', raw.skewSeconds, 0, 86_400),
    calendarYearWeeks: expectBoolean('calendarYearWeeks', raw.calendarYearWeeks),
    delivery: expectOneOf('delivery', raw.delivery, ['direct', 'accel'] as const),
    engine: expectOneOf('engine', raw.engine, ['sharp', 'jimp'] as const),
    allowPrivateNetworks: expectBoolean('allowPrivateNetworks', raw.allowPrivateNetworks),
    allowedAddresses: expectAddressList('allowedAddresses', raw.allowedAddresses),
    blockedHosts: expectHostList('blockedHosts', raw.blockedHosts),
    limits: {
      maxBytes: expectInteger('limits.maxBytes', limits.maxBytes, 1),
      maxPixels: expectInteger('limits.maxPixels', limits.maxPixels, 1),
      connectTimeoutMs: expectInteger('limits.connectTimeoutMs', limits.connectTimeoutMs, 1),
      totalTimeoutMs: expectInteger('limits.totalTimeoutMs', limits.totalTimeoutMs, 1),
      maxRedirects: expectInteger('limits.maxRedirects', limits.maxRedirects, 0, 20),
      maxConcurrentFetches: expectInteger('limits.maxConcurrentFetches', limits.maxConcurrentFetches, 1, 1024),
      maxQueuedFetches: expectInteger('limits.maxQueuedFetches', limits.maxQueuedFetches, 0),
      maxConcurrentResizes: expectInteger('limits.maxConcurrentResizes', limits.maxConcurrentResizes, 1, 256),
      maxQueuedResizes: expectInteger('limits.maxQueuedResizes', limits.maxQueuedResizes, 0),
      maxWaitingResizeBytes: expectInteger('limits.maxWaitingResizeBytes', limits.maxWaitingResizeBytes, 0),
      // nginx gives up on the app after proxy_read_timeout (120 s in the rendered config).
      maxQueueWaitMs: expectInteger('limits.maxQueueWaitMs', limits.maxQueueWaitMs, 1, 119_999),
    },
    singleFlightWaitMs: expectInteger('singleFlightWaitMs', raw.singleFlightWaitMs, 1),
    singleFlightScope: expectOneOf('singleFlightScope', raw.singleFlightScope, ['host', 'tree'] as const),
    tempMaxAgeSeconds: expectInteger('tempMaxAgeSeconds', raw.tempMaxAgeSeconds, 1),
    statsRefreshSeconds: expectInteger('statsRefreshSeconds', raw.statsRefreshSeconds, 0),
    healIntervalSeconds: expectInteger('healIntervalSeconds', raw.healIntervalSeconds, 0),
    healVerifyPerPass: expectInteger('healVerifyPerPass', raw.healVerifyPerPass, 0),
    backoff: {
      initialSeconds: backoffInitial,
      maxSeconds: expectInteger('backoff.maxSeconds', backoff.maxSeconds, backoffInitial),
    },
    quality: {
      jpeg: expectInteger('quality.jpeg', quality.jpeg, 1, 100),
      webp: expectInteger('quality.webp', quality.webp, 1, 100),
      avif: expectInteger('quality.avif', quality.avif, 1, 100),
    },
    userAgent,
    stripMetadata: expectBoolean('stripMetadata', raw.stripMetadata),
    mozjpeg: expectBoolean('mozjpeg', raw.mozjpeg),
    logLevel: expectOneOf('logLevel', raw.logLevel, ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const),
    nginx: {
      listen: expectListen('nginx.listen', nginx.listen),
      internalPrefix,
      cacheDir: nginx.cacheDir === null ? null : expectString('nginx.cacheDir', nginx.cacheDir),
      cacheMaxSize: expectNginxSize('nginx.cacheMaxSize', nginx.cacheMaxSize),
      // A few seconds at most: how long a link is taken for valid after its check.
      cacheSeconds: expectInteger('nginx.cacheSeconds', nginx.cacheSeconds, 0, 3),
    },
    admin: { listen: adminListen },
    shutdownGraceMs: expectInteger('shutdownGraceMs', raw.shutdownGraceMs, 0, 600_000),
    workers: expectInteger('workers', raw.workers, 1, 256),
  };
}

/** defaults < file < env < flags, validated. */
export function buildConfig(layers: { file?: ConfigLayer; env?: ConfigLayer; flags?: ConfigLayer }): Config {
  let merged: ConfigLayer = structuredClone(DEFAULT_CONFIG) as unknown as ConfigLayer;
  for (const layer of [layers.file, layers.env, layers.flags]) {
    if (layer !== undefined) merged = mergeLayers(merged, layer);
  }
  return validateConfig(merged);
}

/** Host and port of a validated `host:port` (brackets of an IPv6 host removed). */
export function splitListen(listen: string): { host: string; port: number } {
  const colon = listen.lastIndexOf(':');
  const host = listen.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
  return { host, port: Number(listen.slice(colon + 1)) };
}
