/**
 * The Express app. It only wires: method → link contract → signature → image URL →
 * image service → delivery. Every refusal goes through `sendError`.
 */
import express, { type NextFunction, type Request, type Response } from 'express';
import type { IncomingMessage } from 'node:http';
import { performance } from 'node:perf_hooks';
import { pipeline } from 'node:stream/promises';
import helmet from 'helmet';
import type { Config } from '../config/config.js';
import { ImageproxyError, asError, toImageproxyError } from '../errors.js';
import type { ImageAnswer, ImageService } from '../service/imageService.js';
import { storageKey } from '../contract/layout.js';
import { rangeDecision } from './byteRange.js';
import { decodeImageUrl, imageUrlBytes, linkRulesOf, parseLink, type LinkRules } from '../contract/link.js';
import type { Logger } from '../observe/log.js';
import type { StoredImage } from '../tree/store.js';
import { LogThrottle } from '../observe/logThrottle.js';
import { SAFE_READ_FLAGS } from '../tree/regularFile.js';
import { shortUrl, summarizeCause } from '../observe/logFields.js';
import { createMetrics, type Metrics } from '../observe/metrics.js';
import {
  CONTENT_TYPE_BY_EXTENSION,
  CROSS_ORIGIN_RESOURCE_POLICY,
  CSP_DIRECTIVES,
  ERROR_CACHE_CONTROL,
  IMAGE_CACHE_CONTROL,
  PROVISIONAL_CACHE_CONTROL,
  REFERRER_POLICY,
} from './responseHeaders.js';
import { errorAnswer } from './placeholder.js';
import { verifyLinkSignature } from '../contract/signing.js';

/** What a request is answered with; a reload (SIGHUP) replaces it between requests. */
export interface AppSettings {
  config: Config;
  secrets: readonly string[];
  images: ImageService;
}

/** How a stopping server tells its requests (server/http/server.ts). */
interface AppLifecycle {
  /** True once the server stopped accepting: answers ask the client to close the connection. */
  stopping(): boolean;
  /** Aborted when the grace period is over: requests still running answer 503 `shutting_down`. */
  graceOver: AbortSignal;
}

export interface AppDependencies extends AppSettings {
  logger: Logger;
  metrics?: Metrics;
  /** Injected clock, for tests of expiry. */
  now?: () => number;
  /** The settings as they are now, read at the start of each request; default: the fixed ones above. */
  current?: () => AppSettings;
  lifecycle?: AppLifecycle;
}

/** When each request arrived (performance.now()): set by the server on arrival, before any wait for a time slice. */
const arrivals = new WeakMap<IncomingMessage, number>();

/** Notes a request's arrival, once: its duration is measured from here. */
export function markArrival(request: IncomingMessage): void {
  if (!arrivals.has(request)) arrivals.set(request, performance.now());
}

/** Seconds since the request's arrival (marked by the server, or else by the app on entry). */
export function secondsSinceArrival(request: IncomingMessage): number {
  const arrivedAt = arrivals.get(request);
  return arrivedAt === undefined ? 0 : (performance.now() - arrivedAt) / 1000;
}

const IMAGE_MAX_AGE_MS = 604_800_000;
/** At most one `busy` log line per this interval (the count of the others rides on it). */
const BUSY_LOG_INTERVAL_MS = 1000;
// A stop is a restart or a deploy far more often than not: seconds later a process answers.
const SHUTTING_DOWN_RETRY_SECONDS = 2;

export function createApp(deps: AppDependencies): express.Express {
  const { logger } = deps;
  const now = deps.now ?? Date.now;
  const metrics = deps.metrics ?? createMetrics({ processMetrics: false });
  const fixed: AppSettings = { config: deps.config, secrets: deps.secrets, images: deps.images };
  const current = deps.current ?? (() => fixed);
  const rulesByConfig = new WeakMap<Config, LinkRules>();
  const rulesOf = (config: Config): LinkRules => {
    let rules = rulesByConfig.get(config);
    if (rules === undefined) {
      rules = linkRulesOf(config);
      rulesByConfig.set(config, rules);
    }
    return rules;
  };

  const busyLog = new LogThrottle(BUSY_LOG_INTERVAL_MS, now);
  // The bucket of a request whose link was read: its refusals are counted under it too.
  const bucketOf = new WeakMap<Response, string>();
  const countAnswer = (req: Request, res: Response, outcome: string): void =>
    metrics.countAnswer({ outcome, ...bucketLabel(bucketOf.get(res)) }, secondsSinceArrival(req));
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', false);
  // Exact paths only: `/HEALTHZ` or `/healthz/` is a (malformed) link, not the probe.
  app.set('case sensitive routing', true);
  app.set('strict routing', true);
  // Without the server in front (tests of the app alone), a request's time starts here.
  app.use((req, _res, next) => {
    markArrival(req);
    next();
  });
  app.use(
    helmet({
      // The same values nginx sets on the files it serves (server/http/responseHeaders.ts).
      contentSecurityPolicy: { useDefaults: false, directives: CSP_DIRECTIVES },
      crossOriginResourcePolicy: { policy: CROSS_ORIGIN_RESOURCE_POLICY },
      referrerPolicy: { policy: REFERRER_POLICY },
      // TLS is terminated in front of us; HSTS is the front's decision.
      strictTransportSecurity: false,
      // Headers meant for HTML documents: an image answer needs none of them, and
      // hundreds of thumbnails per page make every byte count.
      crossOriginOpenerPolicy: false,
      originAgentCluster: false,
      xDnsPrefetchControl: false,
      xDownloadOptions: false,
      xFrameOptions: false,
      xPermittedCrossDomainPolicies: false,
      xXssProtection: false,
    }),
  );

  // Liveness for load balancers. Metrics and readiness live on the admin listener only
  // (server/http/admin.ts): here every other path, /metrics in any spelling, is a link.
  app.get('/healthz', (_req, res) => {
    res.set('Cache-Control', ERROR_CACHE_CONTROL).type('text/plain').send('ok\n');
  });

  app.use(async (req: Request, res: Response) => {
    const { config, secrets, images } = current();
    if (deps.lifecycle?.stopping() === true) res.set('Connection', 'close');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.set('Allow', 'GET, HEAD');
      throw new ImageproxyError('method_not_allowed', 'only GET and HEAD');
    }
    const link = parseLink(req.path, rulesOf(config));
    bucketOf.set(res, link.bucket);
    const match = verifyLinkSignature(link, { ...config, secrets, nowMs: now() });
    if (match === null) throw new ImageproxyError('bad_signature', 'invalid or expired signature');
    const imageUrl = decodeImageUrl(link.extUrl);
    const key = storageKey(imageUrlBytes(link.extUrl));
    const answer = await untilGraceOver(images.get({ link, imageUrl, key, accept: acceptOf(req) }), deps.lifecycle?.graceOver);
    // The work is done and kept (the next request is a hit); only the answer has no one to go to.
    if (clientWentAway(res)) throw new ClientClosed('before the answer');
    const served = await deliver(req, res, answer, config, images);
    metrics.servedResponses.inc({ format: served.format });
    metrics.servedBytes.inc({ format: served.format }, served.bytes);
    countAnswer(req, res, answer.kind === 'stored' ? answer.cache : answer.kind);
  });

  app.use((error: unknown, req: Request, res: Response, next: NextFunction) => {
    if (error instanceof ClientClosed || clientWentAway(res)) {
      // Not our failure: counted apart and logged at info, so alerts on `internal` stay quiet.
      countAnswer(req, res, 'client_closed');
      logger.info({ path: shortUrl(req.path), when: error instanceof ClientClosed ? error.message : 'while working' }, 'client closed the connection');
      res.destroy();
      return;
    }
    if (res.headersSent) {
      logger.warn({ err: summarizeCause(error), path: shortUrl(req.path) }, 'failed after headers were sent');
      res.destroy();
      return;
    }
    const refusal = toImageproxyError(error);
    sendError(req, res, refusal, logger, busyLog, current().config.placeholder);
    countAnswer(req, res, refusal.code);
    void next;
  });
  return app;
}

/**
 * The request's first Accept header, as nginx's `$http_accept` has it (Node joins
 * repeated headers): nginx picks a class file by that one, so a miss must make the file
 * nginx will look for next time.
 */
function acceptOf(req: Request): string | undefined {
  return req.headersDistinct.accept?.[0];
}

/** The bucket label when the link was read; none for a link refused before (malformed, bad method). */
function bucketLabel(bucket: string | undefined): { bucket?: string } {
  return bucket === undefined ? {} : { bucket };
}

/** The image service's answer, or `shutting_down` if the grace period ends first. */
function untilGraceOver<T>(work: Promise<T>, graceOver: AbortSignal | undefined): Promise<T> {
  if (graceOver === undefined) return work;
  const shuttingDown = (): ImageproxyError =>
    new ImageproxyError('shutting_down', 'server is stopping, try again', { retryAfterSeconds: SHUTTING_DOWN_RETRY_SECONDS });
  return new Promise<T>((resolve, reject) => {
    const onGraceOver = (): void => {
      // The work goes on unobserved until the process exits; its failure is no news.
      work.catch(() => {});
      reject(shuttingDown());
    };
    if (graceOver.aborted) return onGraceOver();
    graceOver.addEventListener('abort', onGraceOver, { once: true });
    work.then(
      (value) => {
        graceOver.removeEventListener('abort', onGraceOver);
        resolve(value);
      },
      (error: unknown) => {
        graceOver.removeEventListener('abort', onGraceOver);
        reject(asError(error));
      },
    );
  });
}

/** What an image answer carried, for the served-by-format metrics. */
interface Served {
  /** The served file's extension (`jpg`, `webp`, …). */
  format: string;
  /** Body bytes: the file's, or what a Range selected; 0 for a HEAD or a 304. */
  bytes: number;
}

function deliver(req: Request, res: Response, answer: ImageAnswer, config: Config, images: ImageService): Promise<Served> {
  const head = req.method === 'HEAD';
  if (answer.kind === 'passthrough') {
    res.status(200).set({
      'Content-Type': answer.contentType,
      'Content-Length': String(answer.bytes.length),
      'Cache-Control': IMAGE_CACHE_CONTROL,
    });
    res.end(head ? undefined : answer.bytes);
    return Promise.resolve({ format: extensionOfType(answer.contentType), bytes: head ? 0 : answer.bytes.length });
  }
  const { image } = answer;
  const contentType = CONTENT_TYPE_BY_EXTENSION[image.ext];
  const cacheControl = answer.provisional === true ? PROVISIONAL_CACHE_CONTROL : IMAGE_CACHE_CONTROL;
  // A negotiated link's every answer varies with Accept, the source format's included:
  // a cache warmed by a client without AVIF must not hand its file to one with.
  if (answer.negotiated === true) res.set('Vary', 'Accept');
  if (config.delivery === 'accel') {
    // nginx streams the file itself (sendfile, Range, ETag); we only name it.
    res.status(200).set({
      'X-Accel-Redirect': `${config.nginx.internalPrefix}/${image.relativePath}`,
      'Content-Type': contentType,
      'Cache-Control': cacheControl,
    });
    res.end();
    return Promise.resolve({ format: image.ext, bytes: head ? 0 : image.bytes });
  }
  if (answer.content !== undefined && isPlainGet(req)) {
    // Just written by this request: the same answer sendFile (or the object's GET)
    // would give, without reading it back.
    const modified = new Date(image.modifiedMs);
    res.status(200).set({
      'Content-Type': contentType,
      'Accept-Ranges': 'bytes',
      'Cache-Control': cacheControl,
      'Last-Modified': modified.toUTCString(),
      ETag: image.object === undefined ? fileEtag(answer.content.length, modified) : objectEtag(image.object.etag),
      'Content-Length': String(answer.content.length),
    });
    res.end(head ? undefined : answer.content);
    return Promise.resolve({ format: image.ext, bytes: head ? 0 : answer.content.length });
  }
  if (image.object !== undefined) return deliverObject(req, res, image, contentType, cacheControl, images);
  return new Promise((resolve, reject) => {
    res.type(contentType);
    // send keeps a Cache-Control already set.
    if (answer.provisional === true) res.set('Cache-Control', cacheControl);
    res.sendFile(image.path, { ...SEND_FILE_OPTIONS }, (error: unknown) => {
      if (error === undefined || error === null) {
        const sent = head || res.statusCode === 304 ? 0 : Number(res.getHeader('Content-Length') ?? 0);
        return resolve({ format: image.ext, bytes: Number.isFinite(sent) ? sent : 0 });
      }
      if (clientWentAway(res) || CLIENT_GONE_CODES.has(String((error as { code?: unknown }).code))) {
        return reject(new ClientClosed('during the answer'));
      }
      const status = (error as { status?: unknown }).status;
      if (status === 404 || REPLACED_CODES.has(String((error as { code?: unknown }).code))) {
        // Removed (purged), or replaced by a symlink or a FIFO (moved aside on the next lookup), between the lookup and the send.
        return reject(new ImageproxyError('not_stored', 'image is not stored', { cause: error }));
      }
      if (typeof status === 'number' && status < 500 && !res.headersSent) {
        // A refused Range (416, with send's Content-Range) or precondition (412): the
        // file is fine, the request's conditions are not.
        res.status(status).set('Cache-Control', ERROR_CACHE_CONTROL).end();
        return resolve({ format: image.ext, bytes: 0 });
      }
      reject(asError(error));
    });
  });
}

/**
 * An image kept as an object, streamed from the gateway (delivery `direct`): its ETag
 * and Last-Modified, conditional requests answered 304 without a GET, a HEAD from the
 * lookup's facts, one byte range as 206 with a ranged GET (server/http/byteRange.ts).
 */
async function deliverObject(req: Request, res: Response, image: StoredImage, contentType: string, cacheControl: string, images: ImageService): Promise<Served> {
  const facts = { etag: image.object?.etag ?? '', modifiedMs: image.modifiedMs };
  const validators = (etag: string, modifiedMs: number): Record<string, string> => ({
    'Cache-Control': cacheControl,
    'Last-Modified': new Date(modifiedMs).toUTCString(),
    ETag: objectEtag(etag),
    'Accept-Ranges': 'bytes',
  });
  res.set(validators(facts.etag, facts.modifiedMs));
  if (req.fresh) {
    res.status(304).end();
    return { format: image.ext, bytes: 0 };
  }
  if (req.method === 'HEAD') {
    res.status(200).set({ 'Content-Type': contentType, 'Content-Length': String(image.bytes) }).end();
    return { format: image.ext, bytes: 0 };
  }
  const wanted = rangeDecision(req.range(image.bytes, { combine: true }), req.get('If-Range'), {
    etag: objectEtag(facts.etag),
    lastModifiedMs: facts.modifiedMs,
  });
  if (wanted.kind === 'unsatisfiable') {
    res.status(416).set({ 'Content-Range': `bytes */${image.bytes}`, 'Cache-Control': ERROR_CACHE_CONTROL }).end();
    return { format: image.ext, bytes: 0 };
  }
  const abandoned = new AbortController();
  res.once('close', () => abandoned.abort());
  const range = wanted.kind === 'part' ? { start: wanted.start, end: wanted.end } : undefined;
  const opened = (await images.openStored?.(image, { signal: abandoned.signal, ...(range === undefined ? {} : { range }) })) ?? null;
  // Removed (purged) between the lookup and the GET.
  if (opened === null) throw new ImageproxyError('not_stored', 'image is not stored', { detail: `${image.relativePath} removed since it was looked up` });
  // The GET's own facts: they describe the bytes that follow, should the object have changed since the lookup.
  res.set({ ...validators(opened.etag, opened.modifiedMs), 'Content-Type': contentType });
  const sent = opened.range === null ? opened.bytes : opened.range.end - opened.range.start + 1;
  if (opened.range === null) res.status(200);
  else res.status(206).set('Content-Range', `bytes ${opened.range.start}-${opened.range.end}/${opened.bytes}`);
  res.set('Content-Length', String(sent));
  try {
    await pipeline(opened.body, res);
  } catch (error) {
    if (clientWentAway(res) || CLIENT_GONE_CODES.has(String((error as { code?: unknown }).code))) throw new ClientClosed('during the answer');
    throw error;
  }
  return { format: image.ext, bytes: sent };
}

/** The gateway's entity tag as an ETag header (strong: the object's bytes, never changed in place). */
function objectEtag(etag: string): string {
  return `"${etag}"`;
}

/** A pass-through's extension from its content type (`image/jpeg` → `jpg`). */
function extensionOfType(contentType: string): string {
  return Object.entries(CONTENT_TYPE_BY_EXTENSION).find(([, type]) => type === contentType)?.[0] ?? 'other';
}

/**
 * `send`'s options for a stored file. dotfiles 'allow': the path is built from a
 * validated key, and a root below a dot directory (~/.local/share/…) must work; `send`
 * would check every path segment. `flags` reach the file's open (send passes its options
 * to fs.createReadStream): a symlink put in the image's place after the lookup fails
 * (ELOOP) instead of being followed out of the tree, and a FIFO does not block.
 */
const SEND_FILE_OPTIONS: Parameters<Response['sendFile']>[1] = Object.assign(
  { maxAge: IMAGE_MAX_AGE_MS, immutable: true, lastModified: true, etag: true, dotfiles: 'allow' as const },
  { flags: SAFE_READ_FLAGS },
);

/** The open or read of a stored file that became a symlink (O_NOFOLLOW) or a FIFO (no pread) since its lookup. */
const REPLACED_CODES: ReadonlySet<string> = new Set(['ELOOP', 'ESPIPE']);

/** Headers that make an answer depend on the stored file: such requests go through sendFile. */
const CONDITIONAL_HEADERS = ['range', 'if-match', 'if-none-match', 'if-modified-since', 'if-unmodified-since', 'if-range'] as const;

function isPlainGet(req: Request): boolean {
  return CONDITIONAL_HEADERS.every((name) => req.headers[name] === undefined);
}

/** The weak ETag `send` (sendFile) gives a file: size and mtime in hex (etag's stat tag). */
function fileEtag(bytes: number, modified: Date): string {
  return `W/"${bytes.toString(16)}-${modified.getTime().toString(16)}"`;
}

/** The client went away before its answer was written: the outcome `client_closed`, never `internal`. */
class ClientClosed extends Error {
  constructor(when: string) {
    super(when);
    this.name = 'ClientClosed';
  }
}

/** Errors of a socket the client closed (send's abort, a reset, a pipe to nobody). */
const CLIENT_GONE_CODES: ReadonlySet<string> = new Set(['ECONNABORTED', 'ECONNRESET', 'EPIPE', 'ERR_STREAM_PREMATURE_CLOSE']);

function clientWentAway(res: Response): boolean {
  return !res.writableFinished && (res.destroyed || res.socket === null || res.socket.destroyed);
}

const FILE_HEADERS = ['Content-Length', 'Content-Range', 'Accept-Ranges', 'ETag', 'Last-Modified'] as const;

/** The one place an error becomes a response. */
function sendError(req: Request, res: Response, error: ImageproxyError, logger: Logger, busyLog: LogThrottle, placeholder: boolean): void {
  // Code, message and detail of the cause only: a got error's request options would fill a screen.
  const logLine = { code: error.code, status: error.status, path: shortUrl(req.path), detail: error.detail, err: summarizeCause(error.cause) };
  if (error.code === 'busy') {
    // The admission limits doing their job under load: worth a warning, not an alert, and
    // not one line per refused request (a burst would flood the log and slow every answer).
    const heldBack = busyLog.pass();
    if (heldBack !== null) logger.warn(heldBack > 0 ? { ...logLine, alsoRefusedSinceLastLine: heldBack } : logLine, error.message);
  } else if (error.status >= 500) logger.error(logLine, error.message);
  else logger.info(logLine, error.message);
  // Headers `send` set for a file it then could not open (a symlink, a file gone): they describe that file, not this text.
  for (const name of FILE_HEADERS) res.removeHeader(name);
  const answer = errorAnswer(error.code, error.message, acceptOf(req), placeholder);
  // A text answer is the same whatever the client accepts; a placeholder sets its own Vary.
  res.removeHeader('Vary');
  res.status(error.status).set(answer.headers);
  if (error.retryAfterSeconds !== undefined) res.set('Retry-After', String(Math.ceil(error.retryAfterSeconds)));
  // A failure answered again from its backoff record says so, and when it happened.
  if (error.rememberedAt !== undefined) res.set('X-Imageproxy-Remembered', error.rememberedAt);
  // end, not send: no ETag or freshness check for an error answer.
  res.end(answer.body);
}
