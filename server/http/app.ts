/**
 * The Express app. It only wires: method → link contract → signature → image URL →
 * image service → delivery. Every refusal goes through `sendError`.
 */
import express, { type NextFunction, type Request, type Response } from 'express';
import helmet from 'helmet';
import type { Config } from '../config.js';
import { ImageproxyError, toImageproxyError } from '../errors.js';
import type { ImageAnswer, ImageService } from '../imageService.js';
import { storageKey } from '../layout.js';
import { decodeImageUrl, imageUrlBytes, linkRulesOf, parseLink } from '../link.js';
import type { Logger } from '../log.js';
import { createMetrics, type Metrics } from '../metrics.js';
import {
  CONTENT_TYPE_BY_EXTENSION,
  CROSS_ORIGIN_RESOURCE_POLICY,
  CSP_DIRECTIVES,
  ERROR_CACHE_CONTROL,
  IMAGE_CACHE_CONTROL,
  REFERRER_POLICY,
} from '../responseHeaders.js';
import { verifyLinkSignature } from '../signing.js';

export interface AppDependencies {
  config: Config;
  secrets: readonly string[];
  images: ImageService;
  logger: Logger;
  metrics?: Metrics;
  /** Injected clock, for tests of expiry. */
  now?: () => number;
}

const IMAGE_MAX_AGE_MS = 604_800_000;

export function createApp(deps: AppDependencies): express.Express {
  const { config, images, logger } = deps;
  const now = deps.now ?? Date.now;
  const metrics = deps.metrics ?? createMetrics({ processMetrics: false });
  const rules = linkRulesOf(config);

  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', false);
  app.use(
    helmet({
      // The same values nginx sets on the files it serves (server/responseHeaders.ts).
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

  app.get('/healthz', (_req, res) => {
    res.set('Cache-Control', ERROR_CACHE_CONTROL).type('text/plain').send('ok\n');
  });

  app.get('/metrics', async (_req, res) => {
    res.set('Cache-Control', ERROR_CACHE_CONTROL).type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });

  app.use(async (req: Request, res: Response) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.set('Allow', 'GET, HEAD');
      throw new ImageproxyError('method_not_allowed', 'only GET and HEAD');
    }
    const link = parseLink(req.path, rules);
    const match = verifyLinkSignature(link, { ...config, secrets: deps.secrets, nowMs: now() });
    if (match === null) throw new ImageproxyError('bad_signature', 'invalid or expired signature');
    const imageUrl = decodeImageUrl(link.extUrl);
    const key = storageKey(imageUrlBytes(link.extUrl));
    const answer = await images.get({ link, imageUrl, key });
    await deliver(req, res, answer, config);
    metrics.responses.inc({ outcome: answer.kind });
  });

  app.use((error: unknown, req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) {
      logger.warn({ err: error, path: req.path }, 'failed after headers were sent');
      res.destroy();
      return;
    }
    const refusal = toImageproxyError(error);
    metrics.responses.inc({ outcome: refusal.code });
    sendError(req, res, refusal, logger);
    void next;
  });
  return app;
}

function deliver(req: Request, res: Response, answer: ImageAnswer, config: Config): Promise<void> {
  if (answer.kind === 'passthrough') {
    res.status(200).set({
      'Content-Type': answer.contentType,
      'Content-Length': String(answer.bytes.length),
      'Cache-Control': IMAGE_CACHE_CONTROL,
    });
    res.end(req.method === 'HEAD' ? undefined : answer.bytes);
    return Promise.resolve();
  }
  const { image } = answer;
  const contentType = CONTENT_TYPE_BY_EXTENSION[image.ext];
  if (config.delivery === 'accel') {
    // nginx streams the file itself (sendfile, Range, ETag); we only name it.
    res.status(200).set({
      'X-Accel-Redirect': `${config.nginx.internalPrefix}/${image.relativePath}`,
      'Content-Type': contentType,
      'Cache-Control': IMAGE_CACHE_CONTROL,
    });
    res.end();
    return Promise.resolve();
  }
  return new Promise((resolve, reject) => {
    res.type(contentType);
    // dotfiles 'allow': the path is built from a validated key, and a root below a dot
    // directory (~/.local/share/…) must work; `send` would check every path segment.
    res.sendFile(
      image.path,
      { maxAge: IMAGE_MAX_AGE_MS, immutable: true, lastModified: true, etag: true, dotfiles: 'allow' },
      (error: unknown) => {
        if (error === undefined || error === null) return resolve();
        const status = (error as { status?: unknown }).status;
        if (status === 404) {
          // Removed (purged) between the lookup and the send.
          return reject(new ImageproxyError('not_stored', 'image is not stored', { cause: error }));
        }
        if (typeof status === 'number' && status < 500 && !res.headersSent) {
          // A refused Range (416, with send's Content-Range) or precondition (412): the
          // file is fine, the request's conditions are not.
          res.status(status).set('Cache-Control', ERROR_CACHE_CONTROL).end();
          return resolve();
        }
        reject(error);
      },
    );
  });
}

/** The one place an error becomes a response. */
function sendError(req: Request, res: Response, error: ImageproxyError, logger: Logger): void {
  const logLine = { code: error.code, status: error.status, path: req.path, detail: error.detail, err: error.cause };
  if (error.status >= 500) logger.error(logLine, error.message);
  else logger.info(logLine, error.message);
  res.status(error.status).set({
    'Content-Type': 'text/plain; charset=utf-8',
    'Cache-Control': ERROR_CACHE_CONTROL,
    'X-Imageproxy-Error': error.code,
  });
  if (error.retryAfterSeconds !== undefined) res.set('Retry-After', String(Math.ceil(error.retryAfterSeconds)));
  res.send(`${error.code}: ${error.message}\n`);
}
