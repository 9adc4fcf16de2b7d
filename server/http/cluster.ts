/**
 * `serve --workers N`: the primary process forks N workers (node:cluster) that share the
 * one `listen` port, restarts a worker that exits unexpectedly (server/http/workerRestarts.ts),
 * forwards SIGHUP (reload) and SIGTERM/SIGINT (graceful stop) to the workers and exits
 * after them. Workers share the single-flight through its cross-process lock
 * (server/fetch/singleFlight.ts), which works between any processes on the tree.
 *
 * The admin listener runs in the primary: `/metrics` aggregates every worker's registry
 * (prom-client's AggregatorRegistry, over the cluster's IPC channel: counters, histograms
 * and gauges summed per label set, except those declaring another `aggregator`, as
 * imageproxy_build_info does with `max`: 1, not N), `/healthz` answers
 * for the primary, `/readyz` checks the tree and that a worker is listening. Worker 1
 * alone runs the tree's periodic jobs (heal pass, tree gauges); its replacement takes
 * them over.
 */
import cluster, { type Worker } from 'node:cluster';
import { createServer, type Server } from 'node:http';
import { AggregatorRegistry, type PrometheusContentType, type Registry } from 'prom-client';
import type { Logger } from '../observe/log.js';
import { bucketChecks, checkReadiness, probeTreeWritable } from './readiness.js';
import { nextRestart } from './workerRestarts.js';
import { createAdminHandler } from './admin.js';
import { listenOn } from './server.js';

// Lower case so that the config's check of IMAGEPROXY_* variables does not see it.
const SLOT_VARIABLE = 'imageproxy_worker_slot';
// After the workers' own grace period: time for their 503s, their exit, and the kill.
const STOP_MARGIN_MS = 5000;

/** This process's worker number (1…N) when it is a worker of `serve --workers N`, else null. */
export function workerSlot(): number | null {
  if (!cluster.isWorker) return null;
  const slot = Number(process.env[SLOT_VARIABLE]);
  return Number.isInteger(slot) && slot >= 1 ? slot : null;
}

/** In a worker: lets the primary's `/metrics` collect this registry. */
export function shareWorkerMetrics(registry: Registry): void {
  // The constructor installs the worker's answer to the primary's requests.
  new AggregatorRegistry();
  AggregatorRegistry.setRegistries([registry]);
}

export interface PrimaryOptions {
  workers: number;
  root: string;
  /** The configured bucket names: /readyz probes each bucket directory. */
  buckets: readonly string[];
  /** With `storage.type: "s3"`: /readyz probes the bucket (server.ts openBucket) instead of the bucket directories. */
  storageProbe?: () => Promise<void>;
  /** The admin listener's address, or null for none. */
  adminListen: string | null;
  shutdownGraceMs: number;
  logger: Logger;
}

export interface RunningPrimary {
  /** The shared public address, `http://host:port`, once every worker listens. */
  url: string;
  adminUrl: string | null;
  /** Resolves with the exit code once the workers have stopped after a signal (or failed to start). */
  stopped: Promise<number>;
}

/** A signal (a terminal's Ctrl-C) came before every worker listened; the workers are stopped. */
export class StartInterrupted extends Error {
  constructor(readonly signal: string) {
    super(`${signal} before every worker listened`);
  }
}

/** The start failed: a worker exited before every worker listened. Carries that worker's exit code. */
export class WorkersFailedToStart extends Error {
  constructor(readonly exitCode: number) {
    super(`a worker exited with code ${exitCode} while starting`);
  }
}

export async function runPrimary(options: PrimaryOptions): Promise<RunningPrimary> {
  const { logger } = options;
  const slotOf = new Map<Worker, number>();
  const startedAt = new Map<Worker, number>();
  const crashes = new Map<number, number>();
  const restartTimers = new Set<NodeJS.Timeout>();
  const listening = new Set<Worker>();
  let phase: 'starting' | 'running' | 'stopping' = 'starting';
  let exitCode = 0;

  const fork = (slot: number): void => {
    const worker = cluster.fork({ [SLOT_VARIABLE]: String(slot) });
    slotOf.set(worker, slot);
    startedAt.set(worker, Date.now());
  };

  let startDone!: (url: string) => void;
  let startFailed!: (error: Error) => void;
  const started = new Promise<string>((done, fail) => {
    startDone = done;
    startFailed = fail;
  });
  let stoppedDone!: (code: number) => void;
  const stopped = new Promise<number>((done) => (stoppedDone = done));

  cluster.on('listening', (worker, address) => {
    listening.add(worker);
    if (phase === 'starting' && listening.size === options.workers) {
      phase = 'running';
      startDone(addressUrl(address));
    } else if (phase === 'running') {
      logger.info({ worker: slotOf.get(worker), pid: worker.process.pid }, `worker ${slotOf.get(worker)} listening again`);
    }
  });

  cluster.on('exit', (worker, code, signal) => {
    const slot = slotOf.get(worker) ?? 0;
    const livedMs = Date.now() - (startedAt.get(worker) ?? Date.now());
    slotOf.delete(worker);
    startedAt.delete(worker);
    listening.delete(worker);
    if (phase === 'stopping') {
      if (code !== 0) exitCode = 1;
      if (slotOf.size === 0) stoppedDone(exitCode);
      return;
    }
    if (phase === 'starting' && (signal === 'SIGINT' || signal === 'SIGTERM')) {
      // The terminal's Ctrl-C reached this worker before the primary's own handler ran.
      stop(signal);
      return;
    }
    if (phase === 'starting') {
      // A worker that cannot start (address in use, unreadable config) says why on
      // stderr; restarting it would only repeat that. Stop the others and fail.
      phase = 'stopping';
      exitCode = code ?? 1;
      for (const other of slotOf.keys()) other.process.kill('SIGTERM');
      if (slotOf.size === 0) stoppedDone(exitCode);
      const failure = new WorkersFailedToStart(exitCode);
      void stopped.then(() => startFailed(failure));
      return;
    }
    const decision = nextRestart(crashes.get(slot) ?? 0, livedMs);
    crashes.set(slot, decision.crashes);
    logger.error(
      { worker: slot, pid: worker.process.pid, code, signal, livedMs, restartInMs: decision.delayMs },
      `worker ${slot} exited unexpectedly (${signal ?? `code ${code}`}); restarting it`,
    );
    const timer = setTimeout(() => {
      restartTimers.delete(timer);
      if (phase !== 'stopping') fork(slot);
    }, decision.delayMs);
    restartTimers.add(timer);
  });

  let admin: Server | null = null;
  let adminUrl: string | null = null;

  // Before the first fork: a Ctrl-C during a long start must not kill the primary while
  // its workers start, each of which would then die on an EPIPE stack trace (Node's
  // cluster setup writes to the primary before any code of ours runs in the worker).
  // A terminal's Ctrl-C reaches the workers too; SIGTERM from here then finds them already stopping.
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => {
    logger.info({ workers: slotOf.size }, 'SIGHUP: reload forwarded to the workers');
    for (const worker of slotOf.keys()) worker.process.kill('SIGHUP');
  });

  for (let slot = 1; slot <= options.workers; slot += 1) fork(slot);
  const url = await started;

  if (options.adminListen !== null) {
    const aggregator = new AggregatorRegistry<PrometheusContentType>();
    admin = createServer(
      createAdminHandler({
        metrics: { registry: { contentType: aggregator.contentType, metrics: () => aggregator.clusterMetrics() } },
        ready: () =>
          checkReadiness({
            tree: () => probeTreeWritable(options.root),
            ...(options.storageProbe === undefined ? bucketChecks(options.root, options.buckets) : { storage: options.storageProbe }),
            workers: () =>
              listening.size === 0 ? Promise.reject(new Error(`none of ${options.workers} workers is listening`)) : Promise.resolve(),
          }),
        logger,
      }),
    );
    try {
      adminUrl = await listenOn(admin, 'admin.listen', options.adminListen);
    } catch (error) {
      stop('start failed');
      await stopped;
      throw error;
    }
  }

  function stop(reason: string): void {
    if (phase === 'stopping') return;
    if (phase === 'starting') {
      const interrupted = new StartInterrupted(reason);
      void stopped.then(() => startFailed(interrupted));
    }
    phase = 'stopping';
    for (const timer of restartTimers) clearTimeout(timer);
    restartTimers.clear();
    logger.info({ reason, workers: slotOf.size, graceMs: options.shutdownGraceMs }, 'shutting down: stopping the workers');
    admin?.close();
    admin?.closeAllConnections();
    if (slotOf.size === 0) stoppedDone(exitCode);
    for (const worker of slotOf.keys()) worker.process.kill('SIGTERM');
    const killer = setTimeout(() => {
      for (const worker of slotOf.keys()) {
        logger.error({ worker: slotOf.get(worker), pid: worker.process.pid }, 'worker did not stop in time; killed');
        worker.process.kill('SIGKILL');
      }
    }, options.shutdownGraceMs + STOP_MARGIN_MS);
    killer.unref();
  }

  return { url, adminUrl, stopped };
}

function addressUrl(address: { address: string | null; port: number; addressType: number | string }): string {
  const host = address.address ?? '0.0.0.0';
  return `http://${address.addressType === 6 || host.includes(':') ? `[${host}]` : host}:${address.port}`;
}
