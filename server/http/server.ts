/**
 * Starts the service: store, fetcher, resize engine, image service and Express app on
 * the public listener, the admin listener (metrics, health, readiness), and the tree's
 * heal pass at start and every healIntervalSeconds (server/tree/healing.ts). Reload swaps config and secrets between requests;
 * close stops accepting, lets requests finish within the grace period and answers the
 * rest 503 `shutting_down`. Used by `imageproxy serve` and by tests that need the whole
 * server in-process.
 */
import { setMaxListeners } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import { splitListen, type Config } from '../config/config.js';
import { blocklistOf, createImageServiceFor, damagedKind } from '../service/imageServiceFactory.js';
import type { ImageService } from '../service/imageService.js';
import type { Logger } from '../observe/log.js';
import { createMetrics, type Metrics } from '../observe/metrics.js';
import { bucketChecks, checkReadiness, probeEngine, probeObjectStore, probeTreeWritable, storageNodeId, type ReadinessReport } from './readiness.js';
import type { ImageStore } from '../tree/store.js';
import { openS3Store } from '../storage/openS3Store.js';
import type { S3ObjectStore } from '../storage/s3Store.js';
import { s3StoreSettingsOf } from '../config/storageSettings.js';
import type { BlocklistWatcher } from '../takedown/blocklistStore.js';
import { isImageproxyError } from '../errors.js';
import { startTreeHealing } from '../tree/healing.js';
import { startTreeStatsRefresh, type TreeStatsRefresh } from '../stats/treeStatsRefresh.js';
import { createAdminHandler } from './admin.js';
import { clientErrorAnswer, isHeadRequest } from './clientError.js';
import { createApp, markArrival, secondsSinceArrival, type AppSettings } from './app.js';
import { TimeSlicedQueue } from './timeSlices.js';
import { BUSY_MESSAGE, BUSY_RETRY_AFTER_SECONDS } from '../fetch/admission.js';
import { SECURITY_HEADERS } from './responseHeaders.js';
import { errorAnswer } from './placeholder.js';

export interface RunningServer {
  /** `http://host:port`, with the port actually bound. */
  url: string;
  /** The admin listener's `http://host:port`, or null when `admin.listen` is null. */
  adminUrl: string | null;
  server: Server;
  store: ImageStore;
  metrics: Metrics;
  /** Resolves when the heal pass at start has ended (crash leftovers removed, sidecars rebuilt). */
  firstHeal: Promise<void>;
  /**
   * Applies a new config and secrets to the running server without dropping a request.
   * Throws `ReloadRefused` (and keeps the old settings) when `listen`, `admin.listen` or
   * `root` differ: those need a restart.
   */
  reload(config: Config, secrets: readonly string[]): Promise<ReloadSummary>;
  /** The checks behind the admin `/readyz`. */
  ready(): Promise<ReadinessReport>;
  /** Stops accepting; requests still running after `graceMs` answer 503 `shutting_down`. */
  close(options?: { graceMs?: number }): Promise<CloseSummary>;
}

interface ReloadSummary {
  /** Top-level config keys whose value changed (secrets are counted, never shown). */
  changed: string[];
  secrets: number;
  /** True when the image service (fetcher, engine) was rebuilt for the new settings. */
  imageServiceRebuilt: boolean;
}

interface CloseSummary {
  /** Requests that finished during the grace period. */
  finished: number;
  /** Requests answered 503 `shutting_down` when the grace period ended. */
  cutShort: number;
}

export interface StartOptions {
  config: Config;
  secrets: readonly string[];
  logger: Logger;
  now?: () => number;
  /**
   * Runs the tree's periodic jobs (heal pass, tree gauges); default true. False in all
   * but one worker of `serve --workers N`, so the tree is walked once, not N times.
   */
  treeJobs?: boolean;
  /** Requests waiting for a time slice at most (default MAX_REQUESTS_WAITING_FOR_A_SLICE); tests set it low. */
  maxRequestsWaiting?: number;
}

/** The server could not start: the root cannot be written, an address is taken, the bucket refuses us. One line, for the CLI. */
export class StartRefused extends Error {}

/** A reload that would need a restart; the running settings are kept. */
export class ReloadRefused extends Error {}

// After the grace period, time for the 503s to be written before connections are cut.
const ANSWER_FLUSH_MS = 1000;
/**
 * Work per turn of the event loop on a burst of requests before sockets are polled again.
 * Short, because libuv accepts one connection per listening socket per turn: a new
 * connection waits for as many turns as there are connections ahead of it.
 */
const REQUEST_SLICE_MS = 1;
/** Requests waiting for a slice at most; past it `busy` at once (a burst of this size is seconds of routing). */
const MAX_REQUESTS_WAITING_FOR_A_SLICE = 4096;

/** The `busy` answer the app gives, without the app: for requests the slice queue cannot take. */
function answerBusyAtOnce(request: IncomingMessage, response: ServerResponse, placeholder: boolean): void {
  const answer = errorAnswer('busy', BUSY_MESSAGE, request.headers.accept, placeholder);
  response.writeHead(503, { ...SECURITY_HEADERS, ...answer.headers, 'Retry-After': String(BUSY_RETRY_AFTER_SECONDS) });
  response.end(answer.body);
}

// Keys the image service is built from: a reload that changes one builds a new service.
const IMAGE_SERVICE_KEYS = [
  'engine',
  'limits',
  'allowPrivateNetworks',
  'allowedAddresses',
  'blockedHosts',
  'singleFlightWaitMs',
  'singleFlightScope',
  'backoff',
  'quality',
  'mozjpeg',
  'userAgent',
  'stripMetadata',
  'formats',
] as const satisfies ReadonlyArray<keyof Config>;
// Keys only a restart can change: sockets are bound and the tree is open.
const RESTART_KEYS = ['listen', 'root'] as const satisfies ReadonlyArray<keyof Config>;

export async function startServer(options: StartOptions): Promise<RunningServer> {
  const { logger } = options;
  const metrics = createMetrics({ processMetrics: true });
  metrics.setBuildInfo(options.config.engine);
  const clock = options.now ? { now: options.now } : {};
  const root = resolve(options.config.root);
  try {
    await probeTreeWritable(root);
  } catch (error) {
    throw new StartRefused(`root ${root} cannot be created or written: ${(error as Error).message}`);
  }

  // One store per process: a reload keeps its sockets (`storage` needs a restart).
  const bucket = options.config.storage.type === 's3' ? await openBucket(options.config, logger) : null;
  const objects = bucket?.objects ?? null;
  // The takedown blocklist each image service checks: the tree's file under the root, or the bucket's object.
  const blocklistFor = (config: Config): BlocklistWatcher => blocklistOf(config, logger, objects ?? undefined);
  const serviceOptions = (config: Config): Parameters<typeof createImageServiceFor>[2] => ({
    metrics,
    ...clock,
    blocklist: blocklistFor(config),
    ...(objects === null ? {} : { objects }),
  });

  let parts = await createImageServiceFor(options.config, logger, serviceOptions(options.config));
  let images = counted(parts.service);
  let settings: AppSettings = { config: options.config, secrets: [...options.secrets], images: images.service };
  const { store } = parts;

  let stopping = false;
  const graceOver = new AbortController();
  // Every request in flight listens on this one signal: hundreds at once are expected.
  setMaxListeners(0, graceOver.signal);
  const app = createApp({
    ...settings,
    logger,
    metrics,
    ...clock,
    current: () => settings,
    lifecycle: { stopping: () => stopping, graceOver: graceOver.signal },
  });

  const requests = new InFlight();
  const slices = new TimeSlicedQueue({
    sliceMs: REQUEST_SLICE_MS,
    maxQueued: options.maxRequestsWaiting ?? MAX_REQUESTS_WAITING_FOR_A_SLICE,
    onError: (error) => logger.error({ err: error }, 'request handler threw'),
  });
  const server = createServer((request, response) => {
    markArrival(request);
    // The liveness probe never waits behind a burst of links (server/http/timeSlices.ts).
    if (request.url === '/healthz') return void app(request, response);
    if (slices.offer(() => void app(request, response))) return;
    answerBusyAtOnce(request, response, settings.config.placeholder);
    metrics.countAnswer({ outcome: 'busy' }, secondsSinceArrival(request));
  });
  // What Node's parser refuses never reaches a route: answer it as text with our headers
  // (a socket already gone gets nothing).
  server.on('clientError', (error: NodeJS.ErrnoException & { rawPacket?: unknown }, socket) => {
    if (error.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    socket.end(clientErrorAnswer(error.code, isHeadRequest(error.rawPacket)));
  });
  server.on('request', (_request, response) => response.once('close', requests.begin()));
  // nginx keeps idle upstream connections for 60 s (keepalive_timeout of the upstream
  // block); if Node closed them first (its default is 5 s), nginx could send a miss on a
  // socket being closed and answer 502. Stay open longer than nginx does.
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;

  metrics.setQueueDepthSource('requests', () => requests.count);
  const registerServiceQueues = (service: ImageService): void => {
    for (const queue of Object.keys(service.queueDepths?.() ?? {})) {
      metrics.setQueueDepthSource(queue, () => settings.images.queueDepths?.()[queue] ?? 0);
    }
  };
  registerServiceQueues(settings.images);

  const ready = (): Promise<ReadinessReport> =>
    checkReadiness({
      tree: () => probeTreeWritable(root),
      // With a bucket, the images are there: the tree's bucket directories hold nothing.
      ...(bucket === null ? bucketChecks(root, Object.keys(settings.config.buckets)) : { storage: bucket.probe }),
      engine: () => probeEngine(parts.engine),
    });

  const url = await listenOn(server, 'listen', settings.config.listen).catch(async (error: unknown) => {
    await parts.close();
    objects?.close();
    throw error;
  });
  let admin: Server | null = null;
  let adminUrl: string | null = null;
  const adminListen = settings.config.admin.listen;
  if (adminListen !== null) {
    admin = createServer(createAdminHandler({ metrics, ready, logger }));
    try {
      adminUrl = await listenOn(admin, 'admin.listen', adminListen);
    } catch (error) {
      server.close();
      await parts.close();
      objects?.close();
      throw error;
    }
  }

  // The tree's jobs walk its bucket directories: with the images in a bucket there is nothing there.
  const treeJobs = options.treeJobs !== false && objects === null;
  const healing = startTreeHealing({
    root: store.root,
    buckets: Object.keys(settings.config.buckets),
    intervalSeconds: treeJobs ? settings.config.healIntervalSeconds : 0,
    tempMaxAgeMs: settings.config.tempMaxAgeSeconds * 1000,
    maxImageBytes: settings.config.limits.maxBytes,
    verifyPerPass: settings.config.healVerifyPerPass,
    logger,
    onDamaged: (report) => metrics.damagedFiles.inc({ found_by: 'heal', kind: damagedKind(report.relativePath) }),
  });
  const startTreeStats = (config: Config): TreeStatsRefresh =>
    startTreeStatsRefresh({
      root: store.root,
      buckets: Object.keys(config.buckets),
      intervalSeconds: treeJobs ? config.statsRefreshSeconds : 0,
      gauges: metrics.tree,
      logger,
    });
  let treeStats = startTreeStats(settings.config);

  let reloading: Promise<ReloadSummary> = Promise.resolve({ changed: [], secrets: 0, imageServiceRebuilt: false });
  const applyReload = async (config: Config, secrets: readonly string[]): Promise<ReloadSummary> => {
    const previous = settings;
    for (const key of RESTART_KEYS) {
      if (config[key] !== previous.config[key]) {
        throw new ReloadRefused(`${key} cannot change on reload (${previous.config[key]} → ${config[key]}); restart instead`);
      }
    }
    if (config.admin.listen !== previous.config.admin.listen) {
      throw new ReloadRefused(`admin.listen cannot change on reload (${previous.config.admin.listen} → ${config.admin.listen}); restart instead`);
    }
    if (JSON.stringify(config.storage) !== JSON.stringify(previous.config.storage)) {
      throw new ReloadRefused('storage cannot change on reload; restart instead');
    }
    const changed = (Object.keys(config) as Array<keyof Config>).filter(
      (key) => JSON.stringify(config[key]) !== JSON.stringify(previous.config[key]),
    );
    const secretsChanged = secrets.length !== previous.secrets.length || secrets.some((secret, index) => secret !== previous.secrets[index]);
    if (secretsChanged && !changed.includes('secrets')) changed.push('secrets');
    const rebuild = IMAGE_SERVICE_KEYS.some((key) => changed.includes(key));
    const oldParts = parts;
    const oldImages = images;
    if (rebuild) {
      parts = await createImageServiceFor(config, logger, serviceOptions(config));
      images = counted(parts.service);
    }
    // One assignment: a request reads either the old settings or the new, never a mix.
    settings = { config, secrets: [...secrets], images: images.service };
    logger.level = config.logLevel;
    metrics.setBuildInfo(config.engine);
    if (rebuild) {
      registerServiceQueues(settings.images);
      // Requests already inside the old service finish there; then it is closed.
      void oldImages
        .idle()
        .then(() => oldParts.close())
        .catch((error: unknown) => logger.error({ err: error }, 'closing the previous image service failed'));
    }
    if (changed.includes('buckets') || changed.includes('statsRefreshSeconds')) {
      await treeStats.stop();
      treeStats = startTreeStats(config);
    }
    return { changed, secrets: secrets.length, imageServiceRebuilt: rebuild };
  };

  let closing: Promise<CloseSummary> | null = null;
  const closeServer = async (graceMs: number): Promise<CloseSummary> => {
    stopping = true;
    const publicClosed = new Promise<void>((done) => server.close(() => done()));
    server.closeIdleConnections();
    if (admin !== null) {
      admin.close();
      admin.closeAllConnections();
    }
    const atSignal = requests.count;
    await Promise.race([requests.idle(), delay(graceMs)]);
    const cutShort = requests.count;
    if (cutShort > 0) {
      graceOver.abort();
      await Promise.race([requests.idle(), delay(ANSWER_FLUSH_MS)]);
    }
    server.closeAllConnections();
    await publicClosed;
    await treeStats.stop();
    await healing.stop();
    await reloading.catch(() => undefined);
    await parts.close();
    objects?.close();
    return { finished: Math.max(0, atSignal - cutShort), cutShort };
  };

  return {
    url,
    adminUrl,
    server,
    store,
    metrics,
    firstHeal: healing.firstPass,
    reload(config, secrets) {
      if (closing !== null) return Promise.reject(new ReloadRefused('the server is stopping'));
      // One reload at a time, in the order the signals came.
      const next = reloading.catch(() => undefined).then(() => applyReload(config, secrets));
      reloading = next;
      return next;
    },
    ready,
    close(closeOptions = {}) {
      closing ??= closeServer(closeOptions.graceMs ?? settings.config.shutdownGraceMs);
      return closing;
    },
  };
}

/** Binds a server; an address in use or not available becomes a one-line StartRefused. */
/**
 * Connections the kernel holds for a listener until it accepts them (capped by
 * net.core.somaxconn). Node's 511 would drop the connections of a burst the queues
 * (limits.maxQueued*) are sized to let wait; a dropped one costs its client a
 * retransmit, or a reset.
 */
const LISTEN_BACKLOG = 4096;

export async function listenOn(server: Server, key: string, listen: string): Promise<string> {
  const { host, port } = splitListen(listen);
  await new Promise<void>((done, fail) => {
    server.once('listening', done);
    server.once('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'EADDRINUSE') fail(new StartRefused(`${key} ${listen}: address already in use`));
      else if (error.code === 'EADDRNOTAVAIL' || error.code === 'EACCES') fail(new StartRefused(`${key} ${listen}: ${error.code} (${error.message})`));
      else fail(error);
    });
    server.listen({ port, host, backlog: LISTEN_BACKLOG });
  });
  const address = server.address() as AddressInfo;
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `http://${shownHost}:${address.port}`;
}

/** The bucket of `storage.type: "s3"`: its store, and the readiness probe of this process. */
export interface OpenBucket {
  objects: S3ObjectStore;
  probe: () => Promise<void>;
}

/**
 * The bucket's store, probed once (a PUT, GET and DELETE of this process's readiness
 * object). Credentials refused or no such bucket: StartRefused naming the bucket, the
 * gateway and what it said (an operator must act). The gateway not answering: the start
 * goes on, with a warning; misses answer 503 until it answers (/readyz says not ready).
 * The SDK is pinned (docs/storage.md): its notice that later releases need a newer Node
 * says nothing an operator of this version can act on, and would make that one line ten.
 */
export async function openBucket(config: Config, logger: Logger): Promise<OpenBucket> {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const objects = await openS3Store(s3StoreSettingsOf(config.storage));
  const nodeId = storageNodeId();
  const probe = (): Promise<void> => probeObjectStore(objects, nodeId, config.storage.callTimeoutMs);
  try {
    await probe();
  } catch (error) {
    const cause = error instanceof Error ? error.cause : undefined;
    const code = isImageproxyError(cause) ? cause.code : null;
    const where = `storage.bucket ${config.storage.bucket ?? ''} at ${config.storage.endpoint ?? `AWS ${config.storage.region}`}`;
    if (code === 'storage_denied' || code === 'storage_failed') {
      objects.close();
      throw new StartRefused(`${where} cannot be used: ${(error as Error).message}`);
    }
    logger.warn({ reason: (error as Error).message }, `${where} does not answer; starting anyway: misses answer 503 storage_unavailable until it does`);
  }
  return { objects, probe };
}

function delay(ms: number): Promise<void> {
  return new Promise((done) => setTimeout(done, ms).unref());
}

/** Work in progress (responses not yet closed, service calls), with a way to wait until there is none. */
class InFlight {
  count = 0;
  private waiters: Array<() => void> = [];

  /** Counts one piece of work; call the returned function (once) when it ends. */
  begin(): () => void {
    this.count += 1;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      this.count -= 1;
      if (this.count === 0) for (const waiter of this.waiters.splice(0)) waiter();
    };
  }

  idle(): Promise<void> {
    if (this.count === 0) return Promise.resolve();
    return new Promise((done) => this.waiters.push(done));
  }
}

/** An image service whose calls in progress are counted, so that a replaced one closes only when idle. */
function counted(service: ImageService): { service: ImageService; idle(): Promise<void> } {
  const calls = new InFlight();
  return {
    service: {
      get(request) {
        const end = calls.begin();
        return service.get(request).finally(end);
      },
      ...(service.openStored === undefined ? {} : { openStored: (image, openOptions) => service.openStored?.(image, openOptions) ?? Promise.resolve(null) }),
      ...(service.queueDepths === undefined ? {} : { queueDepths: () => service.queueDepths?.() ?? {} }),
      close: () => service.close(),
    },
    idle: () => calls.idle(),
  };
}
