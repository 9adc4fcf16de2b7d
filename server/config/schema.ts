/**
 * Every setting, declared once: its type and range (a zod schema whose errors are the
 * messages an admin sees), its default with the reason for it, its IMAGEPROXY_* variable,
 * its command-line flag where a command mirrors it, and its one-line doc (the README row
 * and the flag's help). The `Config` type, the validator (server/config/config.ts), the
 * environment reader, the flags (server/cli/configFlags.ts) and the README table
 * (server/config/configTable.ts) are all derived from CONFIG_SCHEMA. Pure.
 */
import { z } from 'zod';
import { DEFAULT_QUALITY, ENGINE_NAMES } from '../images/engine.js';
import { normaliseHost } from '../takedown/blocklist.js';
import { parseAllowList } from '../fetch/netPolicy.js';
import { MODERN_FORMATS } from '../contract/accept.js';
import { storePrefixProblem } from '../storage/objectNames.js';
import { MAX_QUEUE_WAIT_MS, NGINX_PROXY_READ_TIMEOUT_SECONDS } from './nginxLimits.js';

/** What a setting says about itself besides its type and default. */
export interface SettingMeta {
  /** One short line: the README row and the help of the setting's flag. */
  doc: string;
  /** The environment variable that sets it (absent: file and flags only). */
  env?: string;
  /** The commander flag of the commands that mirror the key (`--max-bytes <n>`). */
  flag?: string;
  /** The word that sets null in a variable or flag (an empty variable does too). */
  nullWord?: string;
  /** The allowed values as the README shows them, where the type cannot say. */
  values?: string;
  /** The default as the README shows it, where the value itself would not read well. */
  shownDefault?: string;
}

/** In an issue's params: this issue says it better than the key's own check (reported first). */
export const OVERRIDES = 'overridesOwnCheck';

const VERDICT_CACHE_REMOVAL =
  "removed: nginx's verdict cache is gone (njs checks every hit, which costs less than the cache on a page of distinct links); delete this setting and re-render the nginx config";

/**
 * Settings that existed once and are gone: a config or environment that still sets one is
 * refused with what to do, not with a bare "unknown key" (the key would otherwise look
 * misspelt). Keyed by the dotted key; `env` is the variable that set it.
 */
export const REMOVED_SETTINGS: Readonly<Record<string, { env?: string; removal: string }>> = {
  // The verdict cache made a page of distinct thumbnails slower than checking every hit.
  'nginx.cacheSeconds': { removal: VERDICT_CACHE_REMOVAL },
  'nginx.cacheDir': { env: 'IMAGEPROXY_NGINX_CACHE_DIR', removal: VERDICT_CACHE_REMOVAL },
  'nginx.cacheMaxSize': { removal: VERDICT_CACHE_REMOVAL },
};

/** Which schemas are settings, and what they say (read by the walkers below). */
const SETTING_META = z.registry<SettingMeta>();

// Shared with server/deploy/nginxConfig.ts, which checks its own input by the same rules.
export const BUCKET_NAME_PATTERN = /^[A-Za-z0-9_-]{1,32}$/;
export const PREFIX_PATTERN = /^\/[A-Za-z0-9_-]+$/;
const LISTEN_PATTERN = /^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/;

const shown = (value: unknown): string => JSON.stringify(value) ?? String(value);

// ---- value types, each with the message that names what is wrong ------------------------

export function integer(min: number, max = Number.MAX_SAFE_INTEGER) {
  const error = (issue: { input?: unknown }): string => `must be an integer from ${min} to ${max}, got ${shown(issue.input)}`;
  return z.number({ error }).int({ error }).min(min, { error }).max(max, { error });
}

function text() {
  return z.string({ error: 'must be a string' });
}

function nonEmptyText() {
  return text().min(1, { error: 'must not be empty' });
}

function flag() {
  return z.boolean({ error: (issue) => `must be true or false, got ${shown(issue.input)}` });
}

function oneOf<const T extends readonly [string, ...string[]]>(values: T) {
  return z.enum(values, { error: (issue) => `must be one of ${values.join(', ')}, got ${shown(issue.input)}` });
}

function isListen(value: string): boolean {
  const match = LISTEN_PATTERN.exec(value);
  return match !== null && Number(match[1]) <= 65535;
}

export function listenAddress() {
  return text().refine(isListen, { error: (issue) => `must be host:port (e.g. 127.0.0.1:8091), got ${shown(issue.input)}` });
}

function isAddressOrCidr(value: string): boolean {
  try {
    parseAllowList([value]);
    return true;
  } catch {
    return false;
  }
}

/** An object of settings: unknown keys refused, absent ones defaulted. */
function group<Shape extends z.ZodRawShape>(shape: Shape) {
  return z.strictObject(shape, { error: (issue) => (issue.code === 'invalid_type' ? 'must be an object' : undefined) });
}

/** A setting: its type, its default (the value as the app uses it) and what it says. */
function setting<S extends z.ZodType>(schema: S, defaultValue: z.util.NoUndefined<z.output<S>>, meta: SettingMeta) {
  const withDefault = schema.default(defaultValue);
  SETTING_META.add(withDefault, meta);
  return withDefault;
}

const BUCKET = group({ legacySignatures: flag().default(false) });

const BUCKETS = z
  .record(z.string(), z.preprocess((value) => value ?? {}, BUCKET), { error: 'must be an object' })
  .superRefine((buckets, context) => {
    for (const name of Object.keys(buckets)) {
      if (!BUCKET_NAME_PATTERN.test(name)) context.addIssue({ code: 'custom', path: [name], message: 'bucket names are 1-32 of A-Z a-z 0-9 _ -' });
    }
    if (Object.keys(buckets).length === 0) context.addIssue({ code: 'custom', message: 'at least one bucket is needed' });
  });

const SIZES = z
  .array(integer(1, 10_000), { error: 'must be a non-empty list of integers' })
  .min(1, { error: 'must be a non-empty list of integers' })
  .transform((sizes) => [...new Set(sizes)].sort((a, b) => a - b));

const ADDRESS_LIST = z.array(
  text().refine(isAddressOrCidr, { error: (issue) => `${shown(issue.input)} is not an IP address or CIDR` }),
  { error: 'must be a list of IP addresses or CIDRs' },
);

const HOST_LIST = z.array(
  text().transform((entry, context) => {
    const host = normaliseHost(entry);
    if (host === null) {
      context.addIssue({ code: 'custom', input: entry, message: `${shown(entry)} is not a host name or IP address` });
      return z.NEVER;
    }
    return host;
  }),
  { error: 'must be a list of host names' },
);

const FORMAT_LIST = z
  .array(oneOf(MODERN_FORMATS), { error: 'must be a list of formats (avif, webp)' })
  .refine((formats) => new Set(formats).size === formats.length, { error: 'must not name a format twice' });

/**
 * Names under `storage` that would hold credentials: refused with where credentials go
 * instead. A config file is read by more people and tools than the key should be; the
 * AWS SDK's chain (environment, shared credentials file, instance role) keeps them out.
 */
const CREDENTIAL_NAME_PATTERN = /secret|password|passwd|credential|token|access.?key|key.?id|^key$/i;

const STORAGE_CREDENTIALS_REFUSAL =
  'credentials are never read from the config: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment, or use the shared credentials file (~/.aws/credentials, AWS_PROFILE), and delete this key';

/** The refusal for `name` set under `storage`, or null when the name holds no credential. */
export function storageCredentialRefusal(name: string): string | null {
  return CREDENTIAL_NAME_PATTERN.test(name) ? STORAGE_CREDENTIALS_REFUSAL : null;
}

function isGatewayUrl(value: string): boolean {
  try {
    const url = new URL(value);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.search === '' && url.hash === '';
  } catch {
    return false;
  }
}

function hasUserInfo(value: string): boolean {
  try {
    const url = new URL(value);
    return url.username !== '' || url.password !== '';
  } catch {
    return false;
  }
}

/** S3's bucket names (3 to 63 of lower-case letters, digits, `.` and `-`); gateways that allow more are not held back by it. */
const S3_BUCKET_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$/;

const STORAGE_TYPES = ['tree', 's3'] as const;

/** An nginx size with its unit (k, m, g), at least a megabyte's worth: what max_size takes. */
const NGINX_CACHE_SIZE_PATTERN = /^(?:[1-9][0-9]{3,9}k|[1-9][0-9]{0,6}m|[1-9][0-9]{0,3}g)$/;

// Off by default: the tree under `root` is the store until a site moves (docs/storage.md).
const STORAGE = group({
  type: setting(oneOf(STORAGE_TYPES), 'tree', {
    doc: 'where images live: tree (files under root) or s3 (a bucket, docs/storage.md; init-buckets refuses it)',
    env: 'IMAGEPROXY_STORAGE_TYPE',
  }),
  endpoint: setting(
    text()
      .refine(isGatewayUrl, { error: (issue) => `must be an http(s) URL such as http://127.0.0.1:7480, got ${shown(issue.input)}` })
      .refine((value) => !hasUserInfo(value), { error: STORAGE_CREDENTIALS_REFUSAL })
      .nullable(),
    null,
    { doc: "the S3 gateway's URL (Ceph RGW, MinIO, B2, …); null: AWS, by region", env: 'IMAGEPROXY_STORAGE_ENDPOINT', nullWord: 'null', values: 'URL or null' },
  ),
  bucket: setting(
    text()
      .regex(S3_BUCKET_PATTERN, { error: (issue) => `must be an S3 bucket name (3-63 of a-z 0-9 . -), got ${shown(issue.input)}` })
      .nullable(),
    null,
    { doc: 'the S3 bucket (needed by storage.type s3 and migrate-storage)', env: 'IMAGEPROXY_STORAGE_BUCKET', nullWord: 'null', values: 'bucket name or null' },
  ),
  // What Ceph RGW and MinIO answer to unless configured otherwise; AWS needs the bucket's own.
  region: setting(nonEmptyText(), 'us-east-1', { doc: 'the region requests are signed for', env: 'IMAGEPROXY_STORAGE_REGION', values: 'region name' }),
  prefix: setting(
    text().refine((value) => storePrefixProblem(value) === null, {
      error: (issue) => `${storePrefixProblem(String(issue.input)) ?? 'is not a prefix'}, got ${shown(issue.input)}`,
    }),
    '',
    {
      doc: 'names in the bucket start with it (a/b/): one bucket may hold several sites',
      env: 'IMAGEPROXY_STORAGE_PREFIX',
      values: 'A-Z a-z 0-9 . _ - /',
      shownDefault: '""',
    },
  ),
  // Gateways rarely have the wildcard DNS virtual-hosted names need; AWS has it.
  forcePathStyle: setting(flag().nullable(), null, {
    doc: 'path-style requests (/{bucket}/{name}); null: true with an endpoint, false for AWS',
    env: 'IMAGEPROXY_STORAGE_FORCE_PATH_STYLE',
    nullWord: 'auto',
    values: '`true`, `false`, null',
    shownDefault: 'auto',
  }),
  // Under the root by default: a directory of the machine's own, on a disk, which the
  // admin already chose for imageproxy's files.
  cacheDir: setting(nonEmptyText().nullable(), null, {
    doc: "nginx's local cache of objects (s3); null: {root}/.imageproxy/nginx-cache; nginx's workers write it",
    env: 'IMAGEPROXY_STORAGE_CACHE_DIR',
    nullWord: 'null',
    values: 'directory or null',
    shownDefault: 'null',
  }),
  // Hits of the hot set come from the local disk, not the gateway; 10 GB is a few hundred
  // thousand thumbnails, small next to the disks of a node.
  cacheMaxSize: setting(text().regex(NGINX_CACHE_SIZE_PATTERN, { error: (issue) => `must be a size such as 512m or 10g, got ${shown(issue.input)}` }), '10g', {
    doc: "the bound of nginx's local cache of objects (s3), an nginx size",
    env: 'IMAGEPROXY_STORAGE_CACHE_MAX_SIZE',
    values: 'number with k, m or g',
  }),
  // The store's own defaults (server/storage/s3Store.ts): a miss fails 503 storage_unavailable
  // within seconds of a gateway gone, well within nginx's proxy_read_timeout.
  callTimeoutMs: setting(integer(100, 600_000), 10_000, {
    doc: 'the deadline of each call to the gateway, its retries included; past it a miss answers 503 storage_unavailable',
    env: 'IMAGEPROXY_STORAGE_CALL_TIMEOUT_MS',
  }),
  connectTimeoutMs: setting(integer(100, 60_000), 2000, {
    doc: "TCP connect (and TLS handshake) to the gateway: seconds mean it is down",
    env: 'IMAGEPROXY_STORAGE_CONNECT_TIMEOUT_MS',
  }),
})
  .superRefine((storage, context) => {
    if (storage.type === 's3' && storage.bucket === null) context.addIssue({ code: 'custom', path: ['bucket'], message: 'must be set when storage.type is s3' });
  })
  .prefault({});

const DEFAULT_MAX_BYTES = 2 * 1024 * 1024; // as imageproxy-py
const DEFAULT_MAX_CONCURRENT_RESIZES = 4;
/** Misses waiting in each queue: what the rendered nginx config's connections can hold. */
const DEFAULT_MAX_QUEUED = 2048;

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** The whole configuration: defaults, each with its reason, and the checks of every key. */
export const CONFIG_SCHEMA = group({
  // Loopback: in production nginx sits in front; standalone, put it behind your own proxy.
  listen: setting(listenAddress(), '127.0.0.1:8091', {
    doc: 'address of the app (port 0 picks a free one and logs it)',
    env: 'IMAGEPROXY_LISTEN',
    flag: '--listen <host:port>',
    values: 'host:port',
  }),
  root: setting(nonEmptyText(), './data', {
    doc: 'the bucket tree (refused on a kernel pseudo filesystem such as /proc)',
    env: 'IMAGEPROXY_ROOT',
    flag: '--root <dir>',
    values: 'directory',
  }),
  secrets: setting(z.array(nonEmptyText(), { error: 'must be a list of strings' }), [], {
    doc: 'signing secrets; any of them verifies (rotation: put the new one first)',
    env: 'IMAGEPROXY_SECRETS',
    values: 'strings',
  }),
  secretFile: setting(text().nullable(), null, {
    doc: 'file of secrets, one a line (# comments), added to secrets; mode 0600 or 0640',
    env: 'IMAGEPROXY_SECRET_FILE',
    values: 'path or null',
  }),
  // Gazelle's CacheBucket enum: standard, forum, torrent group.
  buckets: setting(BUCKETS, { i: { legacySignatures: false }, f: { legacySignatures: false }, t: { legacySignatures: false } }, {
    doc: "bucket names (Gazelle's CacheBucket); legacySignatures: true also accepts links signed without the bucket",
    env: 'IMAGEPROXY_BUCKETS',
    values: '1-32 of A-Z a-z 0-9 _ -',
    shownDefault: 'i, f, t',
  }),
  // The sizes Gazelle's templates ask for.
  sizes: setting(SIZES, [150, 200, 250, 500], { doc: 'the only thumbnail sizes made', env: 'IMAGEPROXY_SIZES', values: '1 to 10000 each' }),
  // Signers in timezones ahead of UTC start a new week up to this much earlier.
  skewSeconds: setting(integer(0, 86_400), 3600, {
    doc: 'also accept the week of now + skew (signers ahead of UTC)',
    env: 'IMAGEPROXY_SKEW_SECONDS',
  }),
  // Off: with the calendar rule a link signed in ISO week 1 verifies again in the last
  // days of December of that year. Only sites still running Gazelle from before
  // 2024-12-30 (date('YW')) need it, at the price of that replay.
  calendarYearWeeks: setting(flag(), false, {
    doc: "also accept (sign: use) calendar-year week keys, date('YW') of Gazelle before 2024-12-30; replays week 1 in December",
    env: 'IMAGEPROXY_CALENDAR_YEAR_WEEKS',
    flag: '--calendar-year-weeks',
  }),
  delivery: setting(oneOf(['direct', 'accel']), 'direct', {
    doc: 'direct: the app sends the bytes; accel: X-Accel-Redirect for nginx',
    env: 'IMAGEPROXY_DELIVERY',
    flag: '--delivery <mode>',
  }),
  engine: setting(oneOf(ENGINE_NAMES), 'sharp', {
    doc: 'resize engine: sharp (libvips) or jimp (pure JavaScript, in worker threads)',
    env: 'IMAGEPROXY_ENGINE',
    flag: '--engine <engine>',
  }),
  allowPrivateNetworks: setting(flag(), false, {
    doc: 'allow fetching from private, loopback and link-local addresses',
    env: 'IMAGEPROXY_ALLOW_PRIVATE_NETWORKS',
    flag: '--allow-private-networks',
  }),
  // Narrower than allowPrivateNetworks: one intranet origin, not the whole private space.
  allowedAddresses: setting(ADDRESS_LIST, [], {
    doc: 'addresses or CIDRs allowed although the policy blocks them (an origin on your LAN)',
    env: 'IMAGEPROXY_ALLOWED_ADDRESSES',
    values: 'IPs or CIDRs',
  }),
  // Nothing is refused until an operator says so; takedowns usually go to the tree's
  // blocklist (`imageproxy block --host`), this list is for hosts fixed by deployment.
  blockedHosts: setting(HOST_LIST, [], {
    doc: "origin hosts refused with 451 blocked before any fetch, besides the blocklist's",
    env: 'IMAGEPROXY_BLOCKED_HOSTS',
    values: 'host names or IPs',
  }),
  // Off: an error is text, as it always was; a site opts in to grey boxes where thumbnails
  // fail (docs/errors.md). Tools and navigations get the text either way.
  placeholder: setting(flag(), false, {
    doc: 'error answers to image loads (Accept lists an image type, not text/html) carry a 1×1 grey image: same status and headers',
    env: 'IMAGEPROXY_PLACEHOLDER',
  }),
  limits: group({
    maxBytes: setting(integer(1), DEFAULT_MAX_BYTES, {
      doc: 'largest image accepted from an origin, in bytes',
      env: 'IMAGEPROXY_MAX_BYTES',
      flag: '--max-bytes <n>',
    }),
    // All frames of an animation counted.
    maxPixels: setting(integer(1), 50_000_000, {
      doc: 'width × height × frames, read from the header before any decode',
      env: 'IMAGEPROXY_MAX_PIXELS',
    }),
    connectTimeoutMs: setting(integer(1), 5000, { doc: 'DNS, TCP connect and TLS handshake', env: 'IMAGEPROXY_CONNECT_TIMEOUT_MS' }),
    totalTimeoutMs: setting(integer(1), 30_000, { doc: 'the whole fetch, redirects and body included', env: 'IMAGEPROXY_TOTAL_TIMEOUT_MS' }),
    maxRedirects: setting(integer(0, 20), 3, {
      doc: 'redirects followed; each hop is checked against the address policy again',
      env: 'IMAGEPROXY_MAX_REDIRECTS',
    }),
    // Fetches wait on the network, not the CPU, so several overlap well; each holds its
    // body (up to maxBytes) until stored, so this times maxBytes bounds that memory.
    maxConcurrentFetches: setting(integer(1, 1024), 8, {
      doc: 'origin fetches at once; each holds its body (up to maxBytes) until stored',
      env: 'IMAGEPROXY_MAX_CONCURRENT_FETCHES',
    }),
    // A waiting miss holds its socket and a little bookkeeping, never image bytes:
    // refusing it would protect nothing, so a burst waits. The count bounds that memory
    // and the descriptors (README, Benchmarks); maxQueueWaitMs bounds the wait.
    maxQueuedFetches: setting(integer(0), DEFAULT_MAX_QUEUED, {
      doc: 'misses waiting for a fetch slot; past it 503 busy at once',
      env: 'IMAGEPROXY_MAX_QUEUED_FETCHES',
    }),
    // Resizing is CPU work, but a resize also waits between its steps (decode, resize,
    // encode, handing bytes back): two per core of a small box keep the cores busy.
    // sharp runs on libuv's pool of four threads, so more than four would only queue
    // there, holding their decoded input.
    maxConcurrentResizes: setting(integer(1, 256), DEFAULT_MAX_CONCURRENT_RESIZES, {
      doc: 'thumbnails being made at once',
      env: 'IMAGEPROXY_MAX_CONCURRENT_RESIZES',
    }),
    // As for fetches: a waiting thumbnail holds no bytes beyond maxWaitingResizeBytes,
    // all together; the wait is bounded by maxQueueWaitMs, whichever engine is slow.
    // Before the resize slots existed it counted running ones too; the key kept its name.
    maxQueuedResizes: setting(integer(0), DEFAULT_MAX_QUEUED, {
      doc: "thumbnails waiting for a resize slot or for their original's fetch; past it 503 busy at once",
      env: 'IMAGEPROXY_MAX_QUEUED_RESIZES',
    }),
    // As much as the running resizes may hold (one largest original each): a short queue
    // keeps its bytes instead of reading them back a moment later.
    maxWaitingResizeBytes: setting(integer(0), DEFAULT_MAX_CONCURRENT_RESIZES * DEFAULT_MAX_BYTES, {
      doc: 'bytes of originals the thumbnails waiting for a resize slot may hold, all together; 0: none',
      env: 'IMAGEPROXY_MAX_WAITING_RESIZE_BYTES',
    }),
    // Well below the rendered nginx proxy_read_timeout: a client gets `busy` with
    // Retry-After, not nginx's 504 after work it can no longer receive.
    maxQueueWaitMs: setting(integer(1, MAX_QUEUE_WAIT_MS), 20_000, {
      doc: `longest wait in either queue before 503 busy; below nginx's proxy_read_timeout (${NGINX_PROXY_READ_TIMEOUT_SECONDS} s)`,
      env: 'IMAGEPROXY_MAX_QUEUE_WAIT_MS',
    }),
  }).prefault({}),
  singleFlightWaitMs: setting(integer(1), 30_000, {
    doc: "how long a request waits for another request's fetch of the same image before busy",
    env: 'IMAGEPROXY_SINGLE_FLIGHT_WAIT_MS',
  }),
  // `host`: a lock in memory, freed when its holder dies; `tree` for machines sharing the
  // tree over a network filesystem (a lock directory per miss; server/fetch/singleFlight.ts).
  singleFlightScope: setting(oneOf(['host', 'tree']), 'host', {
    doc: 'which processes fetch a new image once between them: host (this machine) or tree (all sharing the tree)',
    env: 'IMAGEPROXY_SINGLE_FLIGHT_SCOPE',
  }),
  tempMaxAgeSeconds: setting(integer(1), 3600, { doc: 'temp files older than this are removed by the heal pass, whoever wrote them' }),
  // A day: what a crash leaves is healed by the pass at start, and the app moves a
  // damaged original aside when it looks one up; the periodic pass is for what nginx
  // alone serves, and it reads the head of every image and every sidecar of the tree.
  healIntervalSeconds: setting(integer(0), 86_400, {
    doc: 'pause between heal passes over the tree (one at start); 0: none, not even at start',
    env: 'IMAGEPROXY_HEAL_INTERVAL_SECONDS',
  }),
  // Bit rot inside a file of the right size and type is found only by reading it whole.
  // At one pass a day a tree of a million images is covered in 20 days; the reads are
  // the cost (the digest is cheap), and only thumbnails from before the records are decoded.
  healVerifyPerPass: setting(integer(0), 50_000, {
    doc: 'stored images each heal pass reads whole and checks, in turn through the tree; 0: none',
    env: 'IMAGEPROXY_HEAL_VERIFY_PER_PASS',
  }),
  // Ten minutes: a walk reads every directory entry of the tree, so on a tree of millions
  // of files it is real disk work; tree figures change slowly, and dashboards look at
  // trends, so fresher gauges would cost I/O for nothing.
  statsRefreshSeconds: setting(integer(0), 600, {
    doc: 'pause between walks of the tree behind the imageproxy_tree_* gauges (one at start); 0: none',
    env: 'IMAGEPROXY_STATS_REFRESH_SECONDS',
  }),
  // imageproxy-py retried a failing origin every minute; we double up to a day.
  backoff: group({
    initialSeconds: setting(integer(1), 60, { doc: 'backoff after the first failed fetch of an image, doubling per failure' }),
    maxSeconds: setting(integer(1), 86_400, { doc: 'longest backoff', values: 'initialSeconds or more' }),
  })
    .superRefine((backoff, context) => {
      const { initialSeconds, maxSeconds } = backoff;
      if (!integer(1).safeParse(initialSeconds).success || integer(initialSeconds).safeParse(maxSeconds).success) return;
      // The range that counts, in place of maxSeconds' own (from 1).
      const message = `must be an integer from ${initialSeconds} to ${Number.MAX_SAFE_INTEGER}, got ${shown(maxSeconds)}`;
      context.addIssue({ code: 'custom', path: ['maxSeconds'], input: maxSeconds, message, params: { [OVERRIDES]: true } });
      // Also when maxSeconds is no number at all: the message gives the range that counts.
    }, { when: (payload) => typeof payload.value === 'object' && payload.value !== null })
    .prefault({}),
  // Off: turning it on makes up to two more files per thumbnail and an AVIF or WebP
  // encode on each one's first request (docs/formats.md); nginx must be rendered for it.
  formats: setting(FORMAT_LIST, [], {
    doc: "thumbnails also in these formats for browsers whose Accept lists them, server's preference first; []: off",
    env: 'IMAGEPROXY_FORMATS',
    values: 'avif, webp',
  }),
  // Reasons beside DEFAULT_QUALITY (images/engine.ts).
  quality: group({
    jpeg: setting(integer(1, 100), DEFAULT_QUALITY.jpeg, { doc: 'JPEG quality of thumbnails' }),
    webp: setting(integer(1, 100), DEFAULT_QUALITY.webp, { doc: 'WebP quality of thumbnails' }),
    avif: setting(integer(1, 100), DEFAULT_QUALITY.avif, { doc: 'AVIF quality of thumbnails' }),
  }).prefault({}),
  // On: a thumbnail is encoded once and served on every hit after, so a smaller file
  // (fewer bytes on every hit) is worth the extra encoding time on its one miss.
  mozjpeg: setting(flag(), true, {
    doc: 'sharp encodes JPEG thumbnails with mozjpeg: smaller files, more CPU per thumbnail; jimp ignores it',
    env: 'IMAGEPROXY_MOZJPEG',
  }),
  // Recognisable in origins' logs; set your site's name and a contact here.
  userAgent: setting(text().refine((value) => !/[\r\n]/.test(value), { error: 'must be one line' }), 'imageproxy/0.1 (Gazelle image cache)', {
    doc: "sent to origins; put your site's name and a contact here",
    env: 'IMAGEPROXY_USER_AGENT',
    values: 'one line',
  }),
  // On: a photo's EXIF (GPS position, camera serial, owner) would otherwise reach every
  // visitor, and imageproxy-py, through imgproxy, stored stripped images too.
  stripMetadata: setting(flag(), true, {
    doc: 'remove EXIF, XMP, IPTC and comments from originals before storing them (pixels untouched)',
    env: 'IMAGEPROXY_STRIP_METADATA',
  }),
  logLevel: setting(oneOf(LOG_LEVELS), 'info', {
    doc: 'pino level; logs are JSON lines on stdout',
    env: 'IMAGEPROXY_LOG_LEVEL',
    flag: '--log-level <level>',
  }),
  nginx: group({
    listen: setting(listenAddress(), '127.0.0.1:8080', {
      doc: 'where the rendered nginx server listens',
      env: 'IMAGEPROXY_NGINX_LISTEN',
      values: 'host:port',
    }),
    internalPrefix: setting(
      text().regex(PREFIX_PATTERN, { error: 'must be / followed by letters, digits, _ or - (e.g. /_imageproxy)' }),
      '/_imageproxy',
      { doc: 'internal location of the X-Accel-Redirect answers; not a bucket name', env: 'IMAGEPROXY_NGINX_INTERNAL_PREFIX', values: '/ and A-Z a-z 0-9 _ -' },
    ),
  }).prefault({}),
  // Metrics and readiness on a listener of their own, loopback only: a path-based block
  // in front of a router that ignores case and trailing slashes leaks, a socket cannot.
  admin: group({
    listen: setting(listenAddress().nullable(), '127.0.0.1:9091', {
      doc: "the operators' listener (/metrics, /healthz, /readyz), not listen; null or off: none",
      env: 'IMAGEPROXY_ADMIN_LISTEN',
      flag: '--admin-listen <host:port|off>',
      nullWord: 'off',
      values: 'host:port or null',
    }),
  }).prefault({}),
  // Most misses end within a few seconds; ten lets them finish and still leaves systemd's
  // TimeoutStopSec (15 s in contrib/imageproxy.service) time for the 503s and the exit.
  shutdownGraceMs: setting(integer(0, 600_000), 10_000, {
    doc: 'on SIGTERM/SIGINT, how long requests in flight may finish before 503 shutting_down',
    env: 'IMAGEPROXY_SHUTDOWN_GRACE_MS',
  }),
  storage: STORAGE,
  // One process: nginx serves the hits, and misses are bounded by the network and the
  // resize gate; more workers are for standalone delivery or many cores.
  workers: setting(integer(1, 256), 1, {
    doc: 'processes serve runs on the one listen port (node:cluster); a crashed one is restarted',
    env: 'IMAGEPROXY_WORKERS',
    flag: '--workers <n>',
  }),
}).superRefine((config, context) => {
  const { listen, admin, nginx, buckets } = config;
  // Port 0 picks a free port for each listener: the same text names two sockets.
  if (admin.listen !== null && admin.listen === listen && isListen(listen) && Number(listen.slice(listen.lastIndexOf(':') + 1)) !== 0) {
    context.addIssue({
      code: 'custom',
      path: ['admin', 'listen'],
      message: 'must differ from listen (metrics stay off the public listener); null turns it off',
    });
  }
  if (typeof nginx.internalPrefix === 'string' && typeof buckets === 'object' && buckets !== null && Object.hasOwn(buckets, nginx.internalPrefix.slice(1))) {
    context.addIssue({ code: 'custom', path: ['nginx', 'internalPrefix'], message: 'must differ from every bucket name' });
  }
});

// ---- walking the schema -------------------------------------------------------------------

/** How the text of a variable or flag becomes the setting's value. */
export type TextForm = 'string' | 'number' | 'boolean' | 'list' | 'numberList' | 'buckets';

export interface Setting {
  /** Dotted key (`limits.maxBytes`). */
  key: string;
  meta: SettingMeta;
  defaultValue: unknown;
  form: TextForm;
  /** The integer range, for integer settings. */
  range: { min: number; max: number } | null;
  /** The allowed words, for settings that take one of a few. */
  choices: readonly string[] | null;
}

/** The schema under defaults, nullability and transforms: the type the setting is checked as. */
function innerType(schema: z.ZodType): z.ZodType {
  if (schema instanceof z.ZodDefault || schema instanceof z.ZodPrefault || schema instanceof z.ZodNullable) return innerType(schema.unwrap() as z.ZodType);
  if (schema instanceof z.ZodPipe) return innerType(schema.in as z.ZodType);
  return schema;
}

function formOf(key: string, inner: z.ZodType): TextForm {
  if (inner instanceof z.ZodString || inner instanceof z.ZodEnum) return 'string';
  if (inner instanceof z.ZodNumber) return 'number';
  if (inner instanceof z.ZodBoolean) return 'boolean';
  if (inner instanceof z.ZodRecord) return 'buckets';
  if (inner instanceof z.ZodArray) return innerType(inner.element as z.ZodType) instanceof z.ZodNumber ? 'numberList' : 'list';
  throw new Error(`config schema: no text form for ${key}`);
}

function describe(key: string, schema: z.ZodType, meta: SettingMeta): Setting {
  const inner = innerType(schema);
  return {
    key,
    meta,
    defaultValue: schema.parse(undefined),
    form: formOf(key, inner),
    range: inner instanceof z.ZodNumber ? { min: inner.minValue ?? -Infinity, max: inner.maxValue ?? Infinity } : null,
    choices: inner instanceof z.ZodEnum ? inner.options.map(String) : null,
  };
}

function walk(prefix: string, schema: z.ZodType): Setting[] {
  const object = innerType(schema);
  if (!(object instanceof z.ZodObject)) throw new Error(`config schema: ${prefix} is not a group`);
  return Object.entries(object.shape as Record<string, z.ZodType>).flatMap(([name, child]) => {
    const key = prefix === '' ? name : `${prefix}.${name}`;
    const meta = SETTING_META.get(child);
    return meta === undefined ? walk(key, child) : [describe(key, child, meta)];
  });
}

/** Every setting, in the schema's order. */
export const SETTINGS: readonly Setting[] = walk('', CONFIG_SCHEMA);

export function settingOf(key: string): Setting {
  const found = SETTINGS.find((entry) => entry.key === key);
  if (found === undefined) throw new Error(`config schema: no setting ${key}`);
  return found;
}
