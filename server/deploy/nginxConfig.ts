/**
 * nginx configuration for the fast path: nginx checks the link in njs
 * (nginx/imageproxy.js) and serves stored files itself; misses go to the app, which
 * answers `X-Accel-Redirect` once the file is stored. Pure: returns text, writes nothing.
 *
 * What goes where (renderServerBlock's text is meant for the inside of `http {}`):
 *   http level:   js_path (twice), js_import, js_set $imageproxy_stem,
 *                 map $imageproxy_accel_cache_control, upstream imageproxy_app (with
 *                 formats, js_set $imageproxy_format_class and the maps of Vary and the
 *                 class files' names)
 *   server level: listen, root, types, open_file_cache, the link, /metrics, app and
 *                 internal locations, and one error location per answer nginx gives itself
 *                 (with formats, the link's try_files names the class's files by maps)
 *   load_module:  main level, only in the standalone file (a packaged nginx loads it
 *                 from /etc/nginx/modules-enabled)
 *
 * Secrets reach njs as a generated module (renderConfigModule → imageproxy_config.js in
 * configModuleDir) that nginx/imageproxy.js imports. nginx compiles js modules once, in
 * the master process, when it reads its configuration: no file is read per request and
 * the workers never open it, so the file can be 0600 (or 0640) owned by whoever starts
 * nginx (root in production). Reloading nginx picks up a rotated secret. The
 * alternative, reading a secret file from njs per request, costs a file read on every
 * hit, and njs 0.7.9 keeps no state between requests to cache it in.
 */
import { BUCKET_NAME_PATTERN, ConfigError, PREFIX_PATTERN, expectInteger, expectListen, splitListen } from '../config/config.js';
import { NGINX_PROXY_READ_TIMEOUT_SECONDS } from '../config/nginxLimits.js';
import { ERROR_STATUS, type ErrorCode } from '../errors.js';
import { MAX_ACCEPT_ELEMENTS, MAX_ACCEPT_LENGTH, MODERN_FORMATS, formatClassOf, type ModernFormat } from '../contract/accept.js';
import { IMAGE_EXTENSIONS, classFileExtensions } from '../contract/layout.js';
import { MAX_EXT_URL_LENGTH } from '../contract/link.js';
import { SIGNATURE_BYTES, SIGNATURE_LENGTH } from '../contract/signing.js';
import { parseSize } from '../contract/sizes.js';
import { indent, quote } from './nginxText.js';
import { placeholderBranch, placeholderHttpLevel, placeholderLocation } from './placeholderNginx.js';
import { S3_KEYS_FILE_NAME, checkS3Input, s3HttpLevel, s3ObjectPathLine, s3ProxyLines, type NginxS3Input } from './s3Nginx.js';
import { STORAGE_RETRY_AFTER_SECONDS } from '../storage/storageErrors.js';
import {
  CONTENT_TYPE_BY_EXTENSION,
  ERROR_CACHE_CONTROL,
  IMAGE_CACHE_CONTROL,
  SECURITY_HEADERS,
} from '../http/responseHeaders.js';

export interface NginxRenderInput {
  /** Where nginx listens, `host:port` (e.g. `127.0.0.1:8080`). */
  nginxListen: string;
  /** The app nginx passes misses to, `host:port` (e.g. `127.0.0.1:8091`). */
  appListen: string;
  /** Absolute root of the bucket tree (server/contract/layout.ts). */
  root: string;
  /** URI prefix of the app's `X-Accel-Redirect` answers (e.g. `/_imageproxy`). */
  internalPrefix: string;
  /** Absolute directory holding imageproxy.js (the repo's nginx/ directory). */
  njsDir: string;
  /** Absolute directory where the generated imageproxy_config.js lives. */
  configModuleDir: string;
  buckets: Record<string, { legacySignatures: boolean }>;
  sizes: number[];
  skewSeconds: number;
  /** Also accept the calendar-year week rule (config calendarYearWeeks). Default false. */
  calendarYearWeeks?: boolean;
  secrets: string[];
  /**
   * Config `placeholder`: nginx's own error answers carry the placeholder image to an
   * image load (server/deploy/placeholderNginx.ts). Default false: text, as always.
   */
  placeholder?: boolean;
  /**
   * Config `formats`: the formats thumbnails are offered in, in the server's order of
   * preference (server/contract/accept.ts). Absent or empty: no negotiation, the config
   * is what it was before formats existed.
   */
  formats?: readonly ModernFormat[];
  /**
   * Config `storage` when its type is `s3`: hits come from the bucket through nginx's
   * cache (server/deploy/s3Nginx.ts), nginx's keys from S3_KEYS_FILE_NAME in
   * configModuleDir. Absent: the tree, and the config is what it was before buckets.
   */
  s3?: NginxS3Input;
}

export interface StandaloneOptions {
  /**
   * `user` directive: the account the workers run as when nginx starts as root. It must
   * be able to read the bucket tree (the generated secrets module is read by the master
   * only). Ignored by nginx (with a warning) when not started as root. Default: none,
   * so a root nginx runs its workers as `nobody`.
   */
  user?: string;
  /** Default `auto`; the benchmark uses 1. */
  workerProcesses?: number | 'auto';
  /** Default false: nginx stays in the foreground (tests and supervisors own the process). */
  daemon?: boolean;
  /** Raw directives appended inside `http {}` (benchmarks, tests). Not validated. */
  extraHttp?: string;
}

/** File name of the generated module; nginx/imageproxy.js imports it by this name. */
export const CONFIG_MODULE_NAME = 'imageproxy_config.js';
/** The njs script in njsDir. */
const NJS_SCRIPT_NAME = 'imageproxy.js';
/** The js_set variable: the file stem, `bad_signature` or empty (see nginx/imageproxy.js). */
const STEM_VARIABLE = '$imageproxy_stem';
const UPSTREAM_NAME = 'imageproxy_app';
/** Our Cache-Control on X-Accel-Redirect answers, empty when the app sent one. */
const ACCEL_CACHE_CONTROL_VARIABLE = '$imageproxy_accel_cache_control';
const APP_LOCATION = '@imageproxy_app';
/** The njs header filter of the error locations (nginx/imageproxy.js). */
const ERROR_HEADER_FILTER = 'imageproxy.clearFileHeaders';
/** What nginx adds to a file it serves; an error location deletes these before adding its own. */
const FILE_HEADER_NAMES: readonly string[] = ['Cache-Control', 'Vary', ...Object.keys(SECURITY_HEADERS)];
/**
 * Set by njs for a thumbnail link when formats are offered: its format class (`avif`,
 * `webp` or `source`); empty for any other request (full size, /proxy, not a link).
 */
const FORMAT_CLASS_VARIABLE = '$imageproxy_format_class';
/** `Accept` when the request's format was negotiated, else empty (add_header skips it). */
const VARY_VARIABLE = '$imageproxy_vary';
/** `.avif` / `.webp` for a thumbnail link of that class, else empty: the class file's stem suffix. */
const CLASS_SUFFIX_VARIABLE = '$imageproxy_class_suffix';
/** The extension `try_files` tries at position `index` for the request's class. */
function classExtensionVariable(index: number): string {
  return `$imageproxy_class_ext${index + 1}`;
}
/**
 * The `Accept` headers of current and recent browsers' `<img>` requests and of common
 * tools, whose class nginx/imageproxy.js looks up in a table rendered from
 * server/contract/accept.ts instead of parsing them: nearly every request carries one of
 * these exact strings. Any other header is parsed by the njs port of accept.ts.
 */
export const KNOWN_ACCEPT_HEADERS: readonly string[] = [
  // Chrome, Edge (Chromium), Opera
  'image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8',
  // Chrome before AVIF (85 and older)
  'image/webp,image/apng,image/*,*/*;q=0.8',
  // Firefox, current
  'image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5',
  // Firefox from AVIF support until it listed png and svg
  'image/avif,image/webp,*/*',
  // Firefox 65-91
  'image/webp,*/*',
  // Safari 16 and later (webp before avif: the server's order decides)
  'image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5',
  // Safari 14 and 15
  'image/webp,image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5',
  // Safari 13 and older
  'image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5',
  // EdgeHTML (old Edge)
  'image/png, image/svg+xml, image/*; q=0.8, */*; q=0.5',
  // curl, wget, crawlers, uptime checks
  '*/*',
  'image/*',
];
/** Absolute, as `load_module` would otherwise resolve against the `-p` prefix. */
export const NJS_MODULE_PATH = '/usr/lib/nginx/modules/ngx_http_js_module.so';

/**
 * Every answer nginx makes itself, worded as the app words its errors (server/errors.ts:
 * the status is the code's): `statuses` are the nginx statuses it replaces. The app's own
 * error answers pass through untouched (no proxy_intercept_errors): they already are
 * text with these headers, and more precise.
 */
export interface NginxErrorAnswer {
  code: ErrorCode;
  message: string;
  statuses: readonly number[];
  /** Sent as Retry-After. */
  retryAfterSeconds?: number;
}

export const NGINX_ERROR_ANSWERS: readonly NginxErrorAnswer[] = [
  // A request nginx cannot take: malformed, headers too large (494, sent as 400), an HTTP
  // version it does not speak (505).
  { code: 'bad_request', message: 'malformed request', statuses: [400, 494, 505] },
  // nginx's user cannot read the stored file (a directory above the tree it cannot enter).
  { code: 'forbidden', message: 'the server cannot read this file', statuses: [403] },
  // The internal prefix asked for directly, the metrics path, a file purged between the
  // app's answer and nginx's open.
  { code: 'not_stored', message: 'image is not stored', statuses: [404] },
  // TRACE: nginx refuses it before any location (other methods go to the app, whose
  // answer this is too).
  { code: 'method_not_allowed', message: 'only GET and HEAD', statuses: [405] },
  { code: 'bad_signature', message: 'invalid or expired signature', statuses: [410] },
  // A request body that stopped arriving (client_body_timeout).
  { code: 'request_timeout', message: 'request not received in time', statuses: [408] },
  { code: 'request_too_large', message: 'request body too large', statuses: [413] },
  { code: 'link_too_long', message: 'link too long', statuses: [414] },
  { code: 'range_not_satisfiable', message: 'range not satisfiable', statuses: [416] },
  { code: 'internal', message: 'internal error', statuses: [500] },
  // The app refused or dropped the connection: stopped or restarting.
  { code: 'app_unavailable', message: 'image service unavailable, try again', statuses: [502] },
  // nginx answers 503 only for limits an admin adds (limit_req, limit_conn).
  { code: 'busy', message: 'too busy, try again', statuses: [503] },
  // A Transfer-Encoding nginx does not decode, refused before any location.
  { code: 'unsupported_transfer_encoding', message: 'transfer encoding not supported', statuses: [501] },
  { code: 'app_timeout', message: 'image service did not answer in time', statuses: [504] },
];

/**
 * With the bucket, what nginx answers for the gateway in the locations that fetch from
 * it (the gateway's body never reaches the visitor): unreachable, too slow or failing
 * with nothing cached, nginx's keys refused, anything else. The gateway's 404 goes to
 * the app.
 */
const NGINX_STORAGE_ERROR_ANSWERS: readonly NginxErrorAnswer[] = [
  { code: 'storage_unavailable', message: 'storage unavailable, try again', statuses: [502, 503, 504], retryAfterSeconds: STORAGE_RETRY_AFTER_SECONDS },
  // A gateway that says 403 for a missing object (AWS without s3:ListBucket) lands here too: grant it.
  { code: 'storage_denied', message: "storage refused nginx's keys", statuses: [401, 403] },
  // The gateway sending nginx elsewhere (S3's 301 for a bucket in another region) or
  // refusing the request: its body names the bucket and the endpoint, the visitor gets
  // this. nginx's own 400s (a malformed request) come before any location.
  { code: 'storage_failed', message: 'storage failed', statuses: [301, 302, 307, 308, 400] },
];

/** The body of an answer nginx makes itself: `code: message`, as the app's. */
export function nginxErrorBody(answer: NginxErrorAnswer): string {
  return `${answer.code}: ${answer.message}\n`;
}

/**
 * The internal location answering `code`. A URI, not a named location: nginx cannot
 * redirect to a named location before it has read the request line (a 414 or a 400
 * there came out as 500). Exact-match and internal, so it never catches a link (four
 * or five segments) and answers 404 when asked for from outside.
 */
function errorLocationUri(code: ErrorCode): string {
  return `/_imageproxy_error/${code}`;
}

// ---- validation: nothing from the config may end a directive or open a block -----------

// Absolute paths of ordinary characters: no quote, backslash, `$` (variables), `;`, braces,
// `#` or control characters can reach the config.
const PATH_PATTERN = /^\/[A-Za-z0-9._/+@,:~= -]*$/;
const USER_PATTERN = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}(?: [A-Za-z_][A-Za-z0-9_.-]{0,31})?$/;

function checkPath(key: string, value: string): string {
  if (!PATH_PATTERN.test(value)) {
    throw new ConfigError(key, `must be an absolute path of letters, digits and ._/+@,:~=- or space, got ${JSON.stringify(value)}`);
  }
  return value.length > 1 && value.endsWith('/') ? value.slice(0, -1) : value;
}

const WILDCARD_HOSTS = new Set(['0.0.0.0', '::', '*']);

/**
 * Refuses listen addresses nginx could never use: port 0 (a port picked at each start
 * cannot be written into nginx's upstream or listen) and nginx on the app's own address
 * (one of the two would fail to bind). Errors name the config keys.
 */
function workableListens(nginxListen: string, appListen: string): { nginxListen: string; appListen: string } {
  const nginx = splitListen(nginxListen);
  const app = splitListen(appListen);
  if (app.port === 0) throw new ConfigError('listen', `${appListen}: port 0 picks a new port at each start; nginx's upstream needs the app's fixed port`);
  if (nginx.port === 0) throw new ConfigError('nginx.listen', `${nginxListen}: port 0 cannot be rendered; give nginx a fixed port`);
  const hostsOverlap = nginx.host === app.host || WILDCARD_HOSTS.has(nginx.host) || WILDCARD_HOSTS.has(app.host);
  if (nginx.port === app.port && hostsOverlap) {
    throw new ConfigError('nginx.listen', `${nginxListen} overlaps the app's listen ${appListen}: nginx and the app cannot both bind it`);
  }
  return { nginxListen, appListen };
}

/** The input, checked: throws ConfigError naming the field. */
function checkInput(input: NginxRenderInput): NginxRenderInput {
  const bucketNames = Object.keys(input.buckets);
  if (bucketNames.length === 0) throw new ConfigError('buckets', 'at least one bucket is needed');
  for (const name of bucketNames) {
    // `__proto__` would set the prototype of the generated object instead of a key.
    if (!BUCKET_NAME_PATTERN.test(name) || name === '__proto__') {
      throw new ConfigError(`buckets.${name}`, 'bucket names are 1-32 of A-Z a-z 0-9 _ -');
    }
    if (typeof input.buckets[name]?.legacySignatures !== 'boolean') {
      throw new ConfigError(`buckets.${name}.legacySignatures`, 'must be true or false');
    }
  }
  if (!PREFIX_PATTERN.test(input.internalPrefix)) {
    throw new ConfigError('internalPrefix', 'must be / followed by letters, digits, _ or - (e.g. /_imageproxy)');
  }
  if (Object.hasOwn(input.buckets, input.internalPrefix.slice(1))) {
    throw new ConfigError('internalPrefix', 'must differ from every bucket name');
  }
  if (input.sizes.length === 0) throw new ConfigError('sizes', 'must be a non-empty list of integers');
  input.sizes.forEach((size, index) => expectInteger(`sizes[${index}]`, size, 1, 10_000));
  if (input.calendarYearWeeks !== undefined && typeof input.calendarYearWeeks !== 'boolean') {
    throw new ConfigError('calendarYearWeeks', 'must be true or false');
  }
  if (input.secrets.length === 0) throw new ConfigError('secrets', 'at least one secret is needed');
  if (input.placeholder !== undefined && typeof input.placeholder !== 'boolean') {
    throw new ConfigError('placeholder', 'must be true or false');
  }
  const formats = checkFormats(input.formats ?? []);
  input.secrets.forEach((secret, index) => {
    if (typeof secret !== 'string' || secret.length === 0) throw new ConfigError(`secrets[${index}]`, 'must not be empty');
  });
  return {
    ...workableListens(expectListen('nginxListen', input.nginxListen), expectListen('appListen', input.appListen)),
    root: checkPath('root', input.root),
    internalPrefix: input.internalPrefix,
    njsDir: checkPath('njsDir', input.njsDir),
    configModuleDir: checkPath('configModuleDir', input.configModuleDir),
    buckets: input.buckets,
    sizes: input.sizes,
    skewSeconds: expectInteger('skewSeconds', input.skewSeconds, 0, 86_400),
    calendarYearWeeks: input.calendarYearWeeks ?? false,
    secrets: input.secrets,
    placeholder: input.placeholder ?? false,
    formats,
    ...(input.s3 === undefined ? {} : { s3: input.s3 }),
  };
}

/** The offered formats, checked. */
function checkFormats(formats: readonly ModernFormat[]): readonly ModernFormat[] {
  formats.forEach((format, index) => {
    if (!MODERN_FORMATS.includes(format)) throw new ConfigError(`formats[${index}]`, `must be one of ${MODERN_FORMATS.join(', ')}, got ${JSON.stringify(format)}`);
  });
  if (new Set(formats).size !== formats.length) throw new ConfigError('formats', 'must not list a format twice');
  return formats;
}

// ---- rendering ---------------------------------------------------------------------

function addHeaders(headers: Readonly<Record<string, string>>, always: boolean): string[] {
  return Object.entries(headers).map(
    ([name, value]) => `add_header ${name} ${quote(value)}${always ? ' always' : ''};`,
  );
}

/** Headers on every hit nginx sends (X-Accel-Redirect answers: Cache-Control via the map). */
function fileHeaders(): string[] {
  return addHeaders({ 'Cache-Control': IMAGE_CACHE_CONTROL, ...SECURITY_HEADERS }, false);
}

/** `return STATUS "text";` with the text's trailing newline as nginx's `\\n`. */
function returnText(status: number, text: string): string {
  const body = text.endsWith('\n') ? text.slice(0, -1) : text;
  return `return ${status} ${quote(body).slice(0, -1)}${text.endsWith('\n') ? '\\n' : ''}";`;
}

/**
 * `error_page` for every status nginx may answer itself. A location with an error_page of
 * its own inherits none from the server, so this list goes into each such location too.
 */
function errorPages(): string[] {
  return NGINX_ERROR_ANSWERS.map((answer) => `error_page ${answer.statuses.join(' ')} = ${errorLocationUri(answer.code)};`);
}

/**
 * The error pages of a location fetching from the gateway: `first` (targets by status),
 * then the storage answers, then errorPages() without the statuses already taken (nginx
 * would use the first error_page of a status anyway; one each reads plainly).
 */
function s3ErrorPages(first: ReadonlyArray<{ statuses: readonly number[]; target: string }>): string[] {
  const pages = [...first, ...NGINX_STORAGE_ERROR_ANSWERS.map((answer) => ({ statuses: answer.statuses, target: errorLocationUri(answer.code) }))];
  const taken = new Set(pages.flatMap((page) => page.statuses));
  const rest = NGINX_ERROR_ANSWERS.map((answer) => ({ statuses: answer.statuses.filter((status) => !taken.has(status)), target: errorLocationUri(answer.code) }));
  return [...pages, ...rest].filter((page) => page.statuses.length > 0).map((page) => `error_page ${page.statuses.join(' ')} = ${page.target};`);
}

/** Headers of every error answer nginx makes, besides its X-Imageproxy-Error. */
const ERROR_ANSWER_HEADERS: Readonly<Record<string, string>> = { 'Cache-Control': ERROR_CACHE_CONTROL, ...SECURITY_HEADERS };

/**
 * One location per answer: text whatever the path looks like (`types {}` empty, so
 * a `.jpg` path is no image/jpeg), the error, security and no-store headers on any
 * status (`always`). njs first deletes the file headers an earlier pass of the request
 * left (add_header cannot replace a header): the app's Cache-Control for the image on an
 * X-Accel-Redirect whose file nginx could not open, a hit's headers on a 416. With
 * `placeholder`, an image load is sent on to the placeholder's location instead.
 */
function errorLocations(placeholder: boolean, answers: readonly NginxErrorAnswer[] = NGINX_ERROR_ANSWERS): string[] {
  const locations = answers.flatMap((answer) => [
    `location = ${errorLocationUri(answer.code)} {`,
    '    internal;',
    '    types { }',
    '    default_type "text/plain; charset=utf-8";',
    `    js_header_filter ${ERROR_HEADER_FILTER};`,
    ...indent(addHeaders({ 'X-Imageproxy-Error': answer.code, ...ERROR_ANSWER_HEADERS }, true), 1),
    ...(answer.retryAfterSeconds === undefined ? [] : [`    add_header Retry-After ${answer.retryAfterSeconds} always;`]),
    ...(placeholder ? indent(placeholderBranch(ERROR_STATUS[answer.code], answer.code), 1) : []),
    `    ${returnText(ERROR_STATUS[answer.code], nginxErrorBody(answer))}`,
    '}',
  ]);
  return placeholder ? [...locations, ...placeholderLocation(addHeaders(ERROR_ANSWER_HEADERS, true), ERROR_HEADER_FILTER)] : locations;
}

/**
 * One range per request: an image is fetched whole or resumed from one offset. A request
 * for more ranges is answered as if it had none (200, the whole file), never as a
 * multipart answer many times the file's size (a thousand `0-0` ranges).
 */
function rangeLimit(): string[] {
  return ['max_ranges 1;'];
}

function typesBlock(): string[] {
  return [
    'types {',
    ...IMAGE_EXTENSIONS.map((ext) => `    ${CONTENT_TYPE_BY_EXTENSION[ext]} ${ext};`),
    '}',
  ];
}

/** How the server sends files from the tree: root, limits, types, open files. */
function fileServing(root: string): string[] {
  return [
    `root ${quote(root)};`,
    'server_tokens off;',
    // The request line of the longest link the app accepts (ext_url of MAX_EXT_URL_LENGTH)
    // is past nginx's default 8k buffer, which would answer 414 to a link sign printed.
    'large_client_header_buffers 4 16k;',
    // Only image types: a file without one of these extensions is never served as a page.
    ...typesBlock(),
    'default_type application/octet-stream;',
    // Saves the open() and fstat() of a hit. A cached handle keeps a removed file
    // servable until its entry is checked again (one stat by name): after a takedown
    // (`purge --block`) nginx must stop serving the file within seconds, so entries are
    // checked every second. A hot file still costs one stat a second, not one per hit.
    'open_file_cache max=10000 inactive=60s;',
    'open_file_cache_valid 1s;',
    ...rangeLimit(),
  ];
}

/**
 * How the link location ends: the stem's file with the file headers, else
 * `fallback`; with the bucket, `bucketFetch` (the object from the gateway, its 404 to
 * `fallback`) instead of the file. Then, beside it, the public path /metrics answers 404
 * (metrics are for the admin listener).
 */
function linkLocationEnd(stemVariable: string, fallback: string, formats: readonly ModernFormat[] = [], bucketFetch: readonly string[] | null = null): string[] {
  return [
    // Without `always`: on 200, 206 and 304 only, never on an error.
    ...indent(fileHeaders(), 1),
    ...(bucketFetch !== null
      ? [...(formats.length === 0 ? [] : [`    add_header Vary ${VARY_VARIABLE};`]), ...indent(bucketFetch, 1)]
      : formats.length === 0
      ? [`    try_files ${IMAGE_EXTENSIONS.map((ext) => `${stemVariable}.${ext}`).join(' ')} ${fallback};`]
      : [
          // Every answer of a negotiated thumbnail link, whatever its class (empty otherwise).
          `    add_header Vary ${VARY_VARIABLE};`,
          // The class's files in classFileExtensions order; the source class's (and every
          // other link's) are the files above, in their order.
          `    try_files ${IMAGE_EXTENSIONS.map((_, index) => `${stemVariable}${CLASS_SUFFIX_VARIABLE}.${classExtensionVariable(index)}`).join(' ')} ${fallback};`,
        ]),
    '}',
    '',
    // nginx matches the decoded, slash-merged path (`//metrics`, `/%6detrics`), in any
    // case, with or without a trailing slash; a link has four segments, so no link is lost.
    "# Metrics are served on the app's admin listener only; no visitor reaches this path.",
    'location ~* ^/metrics/?$ {',
    '    return 404;',
    '}',
    '',
  ];
}

/**
 * The http-level pieces of negotiation: the class (njs, read only when `try_files` of a
 * valid link needs it), the Vary it implies, and what the link's `try_files` tries for
 * it: the class file's stem suffix and, at each position, the extension, in
 * classFileExtensions order (server/contract/layout.ts) for a format's class and in
 * IMAGE_EXTENSIONS order otherwise. Maps, not a location per class: nginx looks them up
 * in C, where a redirect to another location and the `if`s leading there cost more.
 */
function negotiationHttpLevel(formats: readonly ModernFormat[]): string[] {
  if (formats.length === 0) return [];
  const classMap = (variable: string, valueOf: (format: ModernFormat) => string, otherwise: string): string[] => [
    `map ${FORMAT_CLASS_VARIABLE} ${variable} {`,
    ...formats.map((format) => `    ${format} ${quote(valueOf(format))};`),
    `    default ${quote(otherwise)};`,
    '}',
  ];
  return [
    // Empty unless the link is a thumbnail link.
    `js_set ${FORMAT_CLASS_VARIABLE} imageproxy.formatClass;`,
    `map ${FORMAT_CLASS_VARIABLE} ${VARY_VARIABLE} {`,
    '    "" "";',
    '    default "Accept";',
    '}',
    ...classMap(CLASS_SUFFIX_VARIABLE, (format) => `.${format}`, ''),
    ...IMAGE_EXTENSIONS.flatMap((ext, index) =>
      classMap(classExtensionVariable(index), (format) => classFileExtensions(format)[index] ?? ext, ext),
    ),
    '',
  ];
}

/**
 * The directives for the inside of `http {}`: js_path/js_import/js_set and the upstream
 * (http level only), then the `server {}`.
 */
export function renderServerBlock(rawInput: NginxRenderInput): string {
  const input = checkInput(rawInput);
  const stem = STEM_VARIABLE;
  const imageExtensions = IMAGE_EXTENSIONS.join('|');
  const formats = input.formats ?? [];
  const bucket = input.s3 === undefined ? null : checkS3Input(input.s3);
  // The bucket's fetch: the object the stem names (with a negotiated thumbnail's class suffix).
  const bucketFetch = (objectName: string): string[] | null =>
    bucket === null ? null : [s3ObjectPathLine(bucket.target, objectName), ...s3ProxyLines(bucket.s3, bucket.target)];

  const httpLevel = [
    '# imageproxy (generated by server/deploy/nginxConfig.ts): these lines go inside http { }.',
    `js_path ${quote(`${input.njsDir}/`)};`,
    `js_path ${quote(`${input.configModuleDir}/`)};`,
    `js_import imageproxy from ${NJS_SCRIPT_NAME};`,
    // Evaluated once per request, when the location first reads it.
    `js_set ${stem} imageproxy.linkStem;`,
    '',
    // nginx keeps the app's Cache-Control on X-Accel-Redirect: add ours only when the app
    // sent none, so there is never a second header (add_header skips empty values). With
    // the bucket the upstream there is the gateway (its Cache-Control hidden): the app's
    // is the one already in the answer's headers.
    `map ${bucket === null ? '$upstream_http_cache_control' : '$sent_http_cache_control'} ${ACCEL_CACHE_CONTROL_VARIABLE} {`,
    `    "" ${quote(IMAGE_CACHE_CONTROL)};`,
    '    default "";',
    '}',
    '',
    `upstream ${UPSTREAM_NAME} {`,
    `    server ${input.appListen};`,
    // Without idle connections kept open, every miss pays a TCP handshake.
    '    keepalive 32;',
    '}',
    '',
    ...(input.placeholder === true ? placeholderHttpLevel() : []),
    ...negotiationHttpLevel(formats),
    ...(bucket === null ? [] : s3HttpLevel(bucket.s3, bucket.target, `${input.configModuleDir}/${S3_KEYS_FILE_NAME}`, input.internalPrefix)),
  ];

  const server = [
    `listen ${input.nginxListen};`,
    ...fileServing(input.root),
    '',
    "# nginx's own answers: text with the app's headers, never an HTML page (below).",
    ...errorPages(),
    // A miss or a link left to the app already went through an error_page (418): its
    // 502/504 when the app is down must still find theirs.
    'recursive_error_pages on;',
    '',
    '# A link: njs checks it (nginx/imageproxy.js) and names the file stem.',
    'location / {',
    // Not well-formed or not GET/HEAD: the app answers the precise 400/404/405.
    `    error_page 418 = ${APP_LOCATION};`,
    // With the bucket: no such object, a miss for the app (which stores it).
    ...indent(bucket === null ? errorPages() : s3ErrorPages([{ statuses: [404], target: APP_LOCATION }]), 1),
    `    if (${stem} = "") {`,
    '        return 418;',
    '    }',
    `    if (${stem} = "bad_signature") {`,
    '        return 410;',
    '    }',
    ...linkLocationEnd(stem, APP_LOCATION, formats, bucketFetch(formats.length === 0 ? stem : `${stem}${CLASS_SUFFIX_VARIABLE}`)),
    '# A miss (or a link njs leaves to the app): the original request URI goes to the app.',
    `location ${APP_LOCATION} {`,
    `    proxy_pass http://${UPSTREAM_NAME};`,
    '    proxy_http_version 1.1;',
    '    proxy_set_header Connection "";',
    '    proxy_set_header Host $host;',
    '    proxy_set_header X-Real-IP $remote_addr;',
    '    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;',
    // Why this long: server/config/nginxLimits.ts (the app's queue waits end before it).
    `    proxy_read_timeout ${NGINX_PROXY_READ_TIMEOUT_SECONDS}s;`,
    '}',
    '',
    ...(bucket === null
      ? [
          `# The app's X-Accel-Redirect answers: ${input.internalPrefix}/{bucket}/{k0}/{k1}/{file}.`,
          `location ^~ ${input.internalPrefix}/ {`,
          '    internal;',
          `    alias ${quote(`${input.root}/`)};`,
          // Belt and braces: only image files, never a sidecar, lock or temp file.
          `    if ($uri !~ "\\.(?:${imageExtensions})$") {`,
          '        return 404;',
          '    }',
          // nginx keeps the app's Content-Type (else the types above apply) and Cache-Control.
          `    add_header Cache-Control ${ACCEL_CACHE_CONTROL_VARIABLE};`,
        ]
      : [
          `# The app's X-Accel-Redirect answers: ${input.internalPrefix}/{object name}, from the bucket.`,
          `location ^~ ${input.internalPrefix}/ {`,
          '    internal;',
          ...indent(s3ErrorPages([]), 1),
          // Belt and braces: only an image object's name.
          '    if ($imageproxy_internal_object = "") {',
          '        return 404;',
          '    }',
          // The gateway's Content-Type is the object's; the app's Cache-Control stays.
          `    add_header Cache-Control ${ACCEL_CACHE_CONTROL_VARIABLE};`,
        ]),
    ...indent(addHeaders(SECURITY_HEADERS, false), 1),
    // nginx drops the app's Vary on X-Accel-Redirect: a negotiated link's says it here.
    ...(formats.length === 0 ? [] : [`    add_header Vary ${VARY_VARIABLE};`]),
    ...indent(bucketFetch('/$imageproxy_internal_object') ?? [], 1),
    '}',
    '',
    ...errorLocations(input.placeholder === true, bucket === null ? NGINX_ERROR_ANSWERS : [...NGINX_ERROR_ANSWERS, ...NGINX_STORAGE_ERROR_ANSWERS]),
  ];

  return [...httpLevel, 'server {', ...indent(server, 1), '}', ''].join('\n');
}

/** Connections per nginx worker; see the events block. */
export const WORKER_CONNECTIONS = 8192;

/**
 * A complete nginx.conf for `nginx -p {prefixDir} -c {file} -e {prefixDir}/error.log`:
 * every path nginx writes (pid, logs, temp directories) lies under prefixDir, so it runs
 * as an ordinary user as well as root. `-e` keeps nginx from opening its compiled-in
 * error log before it reads this file.
 */
export function renderStandaloneConf(
  input: NginxRenderInput,
  prefixDir: string,
  options: StandaloneOptions = {},
): string {
  const prefix = checkPath('prefixDir', prefixDir);
  const under = (name: string): string => quote(`${prefix}/${name}`);
  const workers = options.workerProcesses ?? 'auto';
  if (workers !== 'auto') expectInteger('workerProcesses', workers, 1, 1024);
  if (options.user !== undefined && !USER_PATTERN.test(options.user)) {
    throw new ConfigError('user', `must be "user" or "user group", got ${JSON.stringify(options.user)}`);
  }
  const main = [
    '# Generated by server/deploy/nginxConfig.ts.',
    `load_module ${NJS_MODULE_PATH};`,
    ...(options.user === undefined ? [] : [`user ${options.user};`]),
    `daemon ${options.daemon === true ? 'on' : 'off'};`,
    'master_process on;',
    `worker_processes ${workers};`,
    `pid ${under('nginx.pid')};`,
    `error_log ${under('error.log')} warn;`,
    // A miss holds two connections (client and app) while it waits in the app's queues:
    // one worker holds the app's default fetch queue full without refusing any.
    `worker_rlimit_nofile ${2 * WORKER_CONNECTIONS};`,
    '',
    'events {',
    `    worker_connections ${WORKER_CONNECTIONS};`,
    '}',
    '',
  ];
  const http = [
    `access_log ${under('access.log')} combined buffer=64k flush=1s;`,
    `client_body_temp_path ${under('client_body_temp')};`,
    `proxy_temp_path ${under('proxy_temp')};`,
    `fastcgi_temp_path ${under('fastcgi_temp')};`,
    `uwsgi_temp_path ${under('uwsgi_temp')};`,
    `scgi_temp_path ${under('scgi_temp')};`,
    'sendfile on;',
    'tcp_nopush on;',
    'keepalive_timeout 65s;',
    '',
    ...renderServerBlock(input).trimEnd().split('\n'),
    ...(options.extraHttp === undefined ? [] : ['', ...options.extraHttp.trimEnd().split('\n')]),
  ];
  return [...main, 'http {', ...indent(http, 1), '}', ''].join('\n');
}

/** A JavaScript string literal of plain ASCII: anything else is a \u escape. */
function jsString(value: string): string {
  let out = '"';
  for (let index = 0; index < value.length; index += 1) {
    const code = value.charCodeAt(index);
    const char = value[index] ?? '';
    const plain = code >= 0x20 && code < 0x7f && char !== '"' && char !== '\\';
    out += plain ? char : `\\u${code.toString(16).padStart(4, '0')}`;
  }
  return `${out}"`;
}

/**
 * Every size segment made only of allowed sizes (`150x`, `x200`, `150x200`, …) and the
 * label the app stores it under, as server/contract/sizes.ts parses it: the table njs looks a
 * segment up in. Other digit forms (`0150x`, `150x999`) are not listed.
 */
export function sizeLabelTable(sizes: readonly number[]): Record<string, string> {
  const values = ['', ...[...new Set(sizes)].sort((a, b) => a - b).map(String)];
  const table: Record<string, string> = {};
  for (const height of values) {
    for (const width of values) {
      if (height === '' && width === '') continue;
      const size = parseSize(`${height}x${width}`, sizes);
      if (size.kind === 'box') table[`${height}x${width}`] = size.label;
    }
  }
  return table;
}

/**
 * The class of each of KNOWN_ACCEPT_HEADERS under `formats`, as formatClassOf gives it,
 * in the shape njs searches: `\n{accept}\r{class}` each, shortest first, then `\n`. A header value can
 * hold neither CR nor LF, so `\n{header}\r` is found only for a listed header, whole.
 * Empty when nothing is offered.
 */
export function acceptClassTable(formats: readonly ModernFormat[]): string {
  if (formats.length === 0) return '';
  // Shortest first: a known header is then found at its own entry before any longer one holding it.
  const shortestFirst = [...new Set(KNOWN_ACCEPT_HEADERS)].sort((a, b) => a.length - b.length);
  return `${shortestFirst.map((accept) => `\n${accept}\r${formatClassOf(accept, formats)}`).join('')}\n`;
}

/**
 * The generated njs module imported by nginx/imageproxy.js: secrets, the buckets with
 * and without legacy signatures, allowed sizes, the size segments made of allowed sizes,
 * skew, the week rule and the contract's constants (server/contract/link.ts,
 * server/contract/signing.ts), in the lookup shapes the script uses as they are (njs re-runs
 * module code on each request, so nothing is converted there). It holds the secrets:
 * write it with mode 0600 or 0640, never world-readable.
 */
export function renderConfigModule(rawInput: NginxRenderInput): string {
  const input = checkInput(rawInput);
  const list = (items: readonly string[]): string => jsString(`|${items.join('|')}|`);
  const bucketNames = Object.keys(input.buckets);
  const sizes = [...new Set(input.sizes)].sort((a, b) => a - b).map(String);
  // The object is JSON as well as JavaScript, so tests can read it back. Lookup tables
  // are "|a|b|" strings: njs 0.7.9 rebuilds every object and array of the module on
  // each request, a string literal costs nothing.
  return [
    '// Generated by server/deploy/nginxConfig.ts for nginx/imageproxy.js. Holds the signing',
    '// secrets: keep it 0600/0640, never world-readable. Do not edit; re-render instead.',
    '// buckets, legacyBuckets: the buckets without and with legacy signatures (ext_url',
    '// without the bucket); sizes: the allowed sizes; sizeLabels: the size segments made of',
    '// allowed sizes (each its own stored label); calendarYearWeeks: also accept',
    "// calendar-year week keys; fileHeaderNames: headers nginx's error answers delete before",
    '// adding their own; formats: the formats offered for thumbnails, in order ("": no negotiation);',
    "// acceptClasses: known Accept headers and their class (\\n{accept}\\r{class}, ending \\n);",
    '// the rest: the URL and Accept contracts.',
    'export default {',
    `    "secrets": [${input.secrets.map(jsString).join(', ')}],`,
    `    "buckets": ${list(bucketNames.filter((name) => input.buckets[name]?.legacySignatures !== true))},`,
    `    "legacyBuckets": ${list(bucketNames.filter((name) => input.buckets[name]?.legacySignatures === true))},`,
    `    "sizes": ${list(sizes)},`,
    // Only segments that are their own label: njs answers a listed segment with itself.
    `    "sizeLabels": ${list(Object.entries(sizeLabelTable(input.sizes)).filter(([segment, label]) => segment === label).map(([segment]) => segment))},`,
    `    "skewSeconds": ${input.skewSeconds},`,
    `    "calendarYearWeeks": ${input.calendarYearWeeks === true},`,
    `    "fileHeaderNames": ${jsString(FILE_HEADER_NAMES.join('|'))},`,
    `    "maxExtUrlLength": ${MAX_EXT_URL_LENGTH},`,
    `    "signatureLength": ${SIGNATURE_LENGTH},`,
    `    "signatureBytes": ${SIGNATURE_BYTES},`,
    `    "formats": ${jsString((input.formats ?? []).join(','))},`,
    `    "acceptClasses": ${jsString(acceptClassTable(input.formats ?? []))},`,
    `    "maxAcceptLength": ${MAX_ACCEPT_LENGTH},`,
    `    "maxAcceptElements": ${MAX_ACCEPT_ELEMENTS}`,
    '};',
    '',
  ].join('\n');
}
