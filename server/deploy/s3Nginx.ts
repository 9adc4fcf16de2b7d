/**
 * nginx's side of `storage.type: "s3"` (docs/storage.md): a hit is a GET nginx sends to
 * the S3 gateway for the object the link names, signed by nginx/s3sign.js, through a
 * bounded local cache (proxy_cache). Pure: returns config text.
 *
 * - The object's name is the stem nginx's link check yields (nginx/imageproxy.js
 *   linkStem, `/{bucket}/{k0}/{k1}/{stem}`) plus the class suffix of a negotiated
 *   thumbnail: server/storage/objectNames.ts imageObjectName, under `storage.prefix`.
 * - The cache holds whole objects under the object's path. An entry is fresh only
 *   CACHE_FRESH_SECONDS; after that the next hit revalidates it with a conditional GET
 *   (a 304 moves no bytes), so an object deleted by a takedown stops being served within
 *   seconds on every node, and a gateway that is down or failing leaves the cached
 *   copies served (proxy_cache_use_stale).
 * - The gateway's 404 (no such object) sends the request to the app, as a tree miss does;
 *   nginx's own failure to reach the gateway answers `storage_unavailable`, its 401/403
 *   `storage_denied`, without the gateway's body.
 * - nginx's keys live in an include file of their own (renderS3KeysInclude), read by
 *   nginx's master when it reads its configuration, like the link secrets' module.
 */
import { ConfigError } from '../config/config.js';
import { quote } from './nginxText.js';

export interface NginxS3Input {
  /** The gateway's http(s) URL without a path; null: AWS (`https://s3.{region}.amazonaws.com`). */
  endpoint: string | null;
  /** The S3 bucket. */
  bucket: string;
  region: string;
  /** Object names start with it: '' or `a/b/` (server/storage/objectNames.ts normalizeStorePrefix). */
  prefix: string;
  /** `/{bucket}/{name}` on the endpoint's host, else `/{name}` on `{bucket}.{host}`. */
  forcePathStyle: boolean;
  /** Absolute directory of nginx's cache of objects (nginx's workers write it). */
  cacheDir: string;
  /** The cache's bound on disk, an nginx size (`10g`, `512m`). */
  cacheMaxSize: string;
}

/** nginx's S3 keys, from nginx-config's environment. */
export interface S3Keys {
  accessKeyId: string;
  secretAccessKey: string;
  /** Temporary credentials' token; absent for long-lived keys. */
  sessionToken?: string;
}

/** The include file holding nginx's S3 keys, beside the secrets module. */
export const S3_KEYS_FILE_NAME = 'imageproxy_s3_keys.conf';
/** The njs script signing the gateway GETs, in njsDir. */
const S3_SIGN_SCRIPT_NAME = 's3sign.js';
const UPSTREAM_NAME = 'imageproxy_s3';
const CACHE_ZONE = 'imageproxy_s3';

/**
 * How long a cached object is served without asking the gateway. A takedown deletes the
 * object; the first hit after this many seconds revalidates (a conditional GET: 304 keeps
 * the entry, 404 sends the request to the app, which answers 451 from the blocklist).
 * So a blocked image leaves every node's cache within this bound plus one round trip,
 * under the 5 s a takedown promises; a hot object costs one conditional GET per period.
 */
export const CACHE_FRESH_SECONDS = 2;

/**
 * Entries unused this long leave the cache even when it is not full: nginx's default
 * (10 minutes) would drop a day's images that are seen a few times an hour, and the size
 * bound already evicts the least recently used.
 */
const CACHE_INACTIVE = '7d';

/**
 * The keys zone (shared memory) per byte of cache: nginx keeps about 8 000 keys per
 * megabyte, and thumbnails are rarely under 16 KB, so 1 MB of keys per 128 MB of cache.
 */
const CACHE_BYTES_PER_KEYS_MEGABYTE = 128 * 1024 * 1024;

/**
 * Headers of the gateway's answer a visitor never sees: the object's metadata (the
 * sidecar's facts, the source URL among them: server/storage/objectMetadata.ts), the
 * gateway's request ids and storage details, and the headers nginx adds itself for a hit
 * (one of each, ours). nginx already drops Date, Server and the X-Accel ones.
 */
const S3_HIDDEN_HEADERS: readonly string[] = [
  ...['sha256', 'width', 'height', 'frames', 'fetched-at', 'origin-type', 'source-url'].map((name) => `x-amz-meta-${name}`),
  'x-amz-request-id',
  'x-amz-id-2',
  'x-amz-version-id',
  'x-amz-delete-marker',
  'x-amz-storage-class',
  'x-amz-expiration',
  'x-amz-restore',
  'x-amz-replication-status',
  'x-amz-mp-parts-count',
  'x-amz-tagging-count',
  'x-amz-missing-meta',
  'x-amz-website-redirect-location',
  'x-amz-server-side-encryption',
  'x-amz-server-side-encryption-aws-kms-key-id',
  'x-amz-server-side-encryption-bucket-key-enabled',
  'x-amz-server-side-encryption-customer-algorithm',
  'x-amz-server-side-encryption-customer-key-md5',
  'x-amz-object-lock-mode',
  'x-amz-object-lock-retain-until-date',
  'x-amz-object-lock-legal-hold',
  'x-amz-checksum-crc32',
  'x-amz-checksum-crc32c',
  'x-amz-checksum-crc64nvme',
  'x-amz-checksum-sha1',
  'x-amz-checksum-sha256',
  'x-amz-checksum-type',
  'x-amz-bucket-region',
  'x-rgw-object-type',
  'Cache-Control',
  'Expires',
  'Vary',
  'Content-Disposition',
  'Content-Encoding',
  'Content-Language',
  'Set-Cookie',
  'Access-Control-Allow-Origin',
  'Access-Control-Allow-Credentials',
  'Access-Control-Expose-Headers',
  'Strict-Transport-Security',
  'X-Xss-Protection',
];

const NGINX_SIZE_PATTERN = /^([1-9][0-9]{0,9})([kmg])$/;
const SIZE_UNIT_BYTES: Readonly<Record<string, number>> = { k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

/** Bytes of an nginx size with its unit (`10g`), or null when it is not one. */
function nginxSizeBytes(size: string): number | null {
  const match = NGINX_SIZE_PATTERN.exec(size);
  if (match === null) return null;
  return Number(match[1]) * (SIZE_UNIT_BYTES[match[2] ?? ''] ?? 0);
}

/** Where nginx connects and what it asks for, from the storage settings. */
interface GatewayTarget {
  scheme: 'http' | 'https';
  /** `host:port` of the upstream's server. */
  server: string;
  /** The Host header sent and signed. */
  hostHeader: string;
  /** The host name TLS checks the certificate for (https). */
  tlsName: string;
  /** What precedes the object name in the signed path: `/{bucket}/{prefix}` or `/{prefix}`. */
  pathBase: string;
}

const HOST_NAME_PATTERN = /^[A-Za-z0-9.-]+$/;

function gatewayTarget(s3: NginxS3Input): GatewayTarget {
  const endpoint = s3.endpoint ?? `https://s3.${s3.region}.amazonaws.com`;
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new ConfigError('storage.endpoint', `must be an http(s) URL, got ${JSON.stringify(endpoint)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError('storage.endpoint', 'must be http:// or https://');
  if (url.pathname !== '/' || url.search !== '' || url.username !== '' || url.password !== '') {
    throw new ConfigError('storage.endpoint', `nginx needs the gateway's bare URL (scheme, host, port), got ${JSON.stringify(endpoint)}`);
  }
  const scheme = url.protocol === 'https:' ? 'https' : 'http';
  const port = url.port === '' ? (scheme === 'https' ? '443' : '80') : url.port;
  if (!s3.forcePathStyle && !HOST_NAME_PATTERN.test(url.hostname)) {
    throw new ConfigError('storage.forcePathStyle', `virtual-hosted requests need a host name, not ${url.hostname}: set storage.forcePathStyle to true`);
  }
  const host = s3.forcePathStyle ? url.hostname : `${s3.bucket}.${url.hostname}`;
  const prefix = s3.prefix === '' ? '' : `/${s3.prefix.slice(0, -1)}`;
  return {
    scheme,
    server: `${host}:${port}`,
    hostHeader: url.port === '' ? host : `${host}:${url.port}`,
    tlsName: host,
    pathBase: s3.forcePathStyle ? `/${s3.bucket}${prefix}` : prefix,
  };
}

/** The settings, checked (errors name the config key), and the gateway they reach. */
export function checkS3Input(s3: NginxS3Input): { s3: NginxS3Input; target: GatewayTarget } {
  // Unreserved characters only, as s3ObjectPathLine needs.
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$/.test(s3.bucket)) throw new ConfigError('storage.bucket', `must be an S3 bucket name, got ${JSON.stringify(s3.bucket)}`);
  if (!/^[A-Za-z0-9-]{1,64}$/.test(s3.region)) throw new ConfigError('storage.region', `must be a region name, got ${JSON.stringify(s3.region)}`);
  if (s3.prefix !== '' && !/^(?:[A-Za-z0-9._-]+\/)+$/.test(s3.prefix)) throw new ConfigError('storage.prefix', `must be '' or a/b/, got ${JSON.stringify(s3.prefix)}`);
  if (!/^\/[A-Za-z0-9._/+@,:~=-]*$/.test(s3.cacheDir)) throw new ConfigError('storage.cacheDir', `must be an absolute path of letters, digits and ._/+@,:~=-, got ${JSON.stringify(s3.cacheDir)}`);
  if (nginxSizeBytes(s3.cacheMaxSize) === null) throw new ConfigError('storage.cacheMaxSize', `must be a size such as 512m or 10g, got ${JSON.stringify(s3.cacheMaxSize)}`);
  return { s3, target: gatewayTarget(s3) };
}

/** The keys zone's size: enough keys for a cache of `maxSize` full of small thumbnails. */
function keysZoneSize(maxSize: string): string {
  const bytes = nginxSizeBytes(maxSize) ?? 0;
  return `${Math.max(1, Math.ceil(bytes / CACHE_BYTES_PER_KEYS_MEGABYTE))}m`;
}

/**
 * The http-level pieces: the cache, nginx's keys (an include), the signer, the gateway's
 * upstream, and the map naming the object of an X-Accel-Redirect to `internalPrefix`.
 */
export function s3HttpLevel(s3: NginxS3Input, target: GatewayTarget, keysFile: string, internalPrefix: string): string[] {
  return [
    '# The bucket (storage.type s3): objects come from the gateway through this cache.',
    `proxy_cache_path ${quote(s3.cacheDir)} levels=1:2 keys_zone=${CACHE_ZONE}:${keysZoneSize(s3.cacheMaxSize)} max_size=${s3.cacheMaxSize} inactive=${CACHE_INACTIVE} use_temp_path=off;`,
    // $s3_access_key_id, $s3_secret_access_key, $s3_session_token: readable by root only.
    `include ${quote(keysFile)};`,
    `js_import s3sign from ${S3_SIGN_SCRIPT_NAME};`,
    // Computed only when nginx builds a request to the gateway (a miss, a revalidation).
    'js_set $s3_amz_date s3sign.amzDate;',
    'js_set $s3_authorization s3sign.authorization;',
    `upstream ${UPSTREAM_NAME} {`,
    `    server ${target.server};`,
    '    keepalive 32;',
    '}',
    // Only an image object's name (`{bucket}/{k0}/{k1}/{key}[.{label}[.{format}]]`): the
    // app names nothing else, and nothing else of the bucket (the blocklist) is served.
    `map $uri $imageproxy_internal_object {`,
    `    "~^${internalPrefix}/([A-Za-z0-9_-]{1,32}/[A-Za-z0-9_-]/[A-Za-z0-9_-]/[A-Za-z0-9_-]{43}(?:\\.[A-Za-z0-9]{1,16}){0,2})$" $1;`,
    '    default "";',
    '}',
    '',
  ];
}

/**
 * The directives that fetch `$s3_object_path` (set before) from the gateway through the
 * cache: signed, the visitor's headers left out (nothing of the request but the object's
 * name reaches the gateway), the gateway's own headers hidden, its errors intercepted.
 */
export function s3ProxyLines(s3: NginxS3Input, target: GatewayTarget): string[] {
  return [
    `set $s3_host ${quote(target.hostHeader)};`,
    `set $s3_region ${quote(s3.region)};`,
    // Read by the date and the signature: both name the same second.
    'set $s3_signing_time $msec;',
    `proxy_cache ${CACHE_ZONE};`,
    'proxy_cache_key $s3_object_path;',
    // Only whole objects: never a 404 (the app stores it next), a 403 or a 5xx.
    `proxy_cache_valid 200 ${CACHE_FRESH_SECONDS}s;`,
    'proxy_cache_revalidate on;',
    'proxy_cache_use_stale error timeout http_500 http_502 http_503 http_504;',
    // Concurrent first requests for one object: one gateway GET, the others wait for it.
    'proxy_cache_lock on;',
    // Freshness is ours (above), and nothing the object carries may redirect or rate-limit.
    'proxy_ignore_headers Cache-Control Expires Set-Cookie Vary X-Accel-Redirect X-Accel-Expires X-Accel-Limit-Rate X-Accel-Buffering X-Accel-Charset;',
    ...S3_HIDDEN_HEADERS.map((name) => `proxy_hide_header ${name};`),
    // The hidden headers' table outgrows nginx's default hash.
    'proxy_headers_hash_max_size 1024;',
    'proxy_headers_hash_bucket_size 128;',
    // A HEAD is fetched (and signed) as a GET; nginx answers it from the cached object.
    'proxy_method GET;',
    'proxy_pass_request_headers off;',
    'proxy_pass_request_body off;',
    'proxy_set_header Host $s3_host;',
    'proxy_set_header x-amz-date $s3_amz_date;',
    'proxy_set_header x-amz-content-sha256 UNSIGNED-PAYLOAD;',
    // Empty (not sent) for long-lived keys.
    'proxy_set_header x-amz-security-token $s3_session_token;',
    'proxy_set_header Authorization $s3_authorization;',
    'proxy_set_header Connection "";',
    'proxy_http_version 1.1;',
    'proxy_intercept_errors on;',
    // A gateway that does not accept within this is down: the cached copy, else 503.
    'proxy_connect_timeout 2s;',
    'proxy_read_timeout 10s;',
    ...(target.scheme === 'https'
      ? ['proxy_ssl_server_name on;', `proxy_ssl_name ${target.tlsName};`, 'proxy_ssl_verify on;', 'proxy_ssl_trusted_certificate /etc/ssl/certs/ca-certificates.crt;']
      : []),
    // The path as it is, not s3sign's $s3_object_uri: nginx evaluates proxy_pass on every
    // request, cache hits included, where the njs call would be most of a hit's extra
    // cost. Every path rendered here is of unreserved characters only (s3ObjectPathLine),
    // which SigV4's encoding leaves as they are: the path sent is the path signed.
    `proxy_pass ${target.scheme}://${UPSTREAM_NAME}$s3_object_path;`,
  ];
}

/**
 * `set $s3_object_path` to the object path of `objectName` (text of nginx variables, after
 * a `/`). Every part is of unreserved characters (A-Z a-z 0-9 - . _ and `/`): the bucket
 * and the prefix by checkS3Input, the link's stem by njs (bucket name, base64url key,
 * size label), the class suffix, and the internal location's name by its map. So the
 * path needs no percent-encoding, and proxy_pass sends it as s3sign.js signs it.
 */
export function s3ObjectPathLine(target: GatewayTarget, objectName: string): string {
  return `set $s3_object_path "${target.pathBase}${objectName}";`;
}

/**
 * The include file of nginx's keys: http-level variables that s3sign.js reads. Written
 * 0600 beside the secrets module (nginx's master reads it at start and reload; the
 * workers never open it).
 */
export function renderS3KeysInclude(keys: S3Keys): string {
  const value = (name: string, text: string): string => {
    if (!/^[\x21-\x7e]+$/.test(text)) throw new ConfigError(name, 'must be printable ASCII without spaces');
    return quote(text, name);
  };
  return [
    "# Generated by imageproxy nginx-config: nginx's S3 keys (from its environment). Keep it 0600; never edit, re-render.",
    `map "" $s3_access_key_id { default ${value('AWS_ACCESS_KEY_ID', keys.accessKeyId)}; }`,
    `map "" $s3_secret_access_key { default ${value('AWS_SECRET_ACCESS_KEY', keys.secretAccessKey)}; }`,
    `map "" $s3_session_token { default ${keys.sessionToken === undefined ? '""' : value('AWS_SESSION_TOKEN', keys.sessionToken)}; }`,
    '',
  ].join('\n');
}
