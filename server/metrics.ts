/**
 * Prometheus metrics (prom-client), one registry per app so tests can run several apps
 * in one process. Served by the app at `GET /metrics`; the rendered nginx config does
 * not pass that path through, so only whoever reaches the app's own address sees it.
 */
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface Metrics {
  registry: Registry;
  /** Every answer to a link, by outcome: a stored file, a pass-through, or an error code. */
  responses: Counter<'outcome'>;
  fetches: Counter<'result'>;
  fetchSeconds: Histogram;
  fetchedBytes: Counter;
  resizes: Counter<'engine' | 'result'>;
  resizeSeconds: Histogram<'engine'>;
}

export function createMetrics(options: { processMetrics: boolean }): Metrics {
  const registry = new Registry();
  if (options.processMetrics) collectDefaultMetrics({ register: registry, prefix: 'imageproxy_' });
  return {
    registry,
    responses: new Counter({
      name: 'imageproxy_responses_total',
      help: 'Answers to image links, by outcome (stored, passthrough, or the error code)',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    fetches: new Counter({
      name: 'imageproxy_origin_fetches_total',
      help: 'Fetches from origins, by result (ok, or the error code)',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    fetchSeconds: new Histogram({
      name: 'imageproxy_origin_fetch_seconds',
      help: 'Time to fetch and check an original',
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    fetchedBytes: new Counter({
      name: 'imageproxy_origin_fetched_bytes_total',
      help: 'Bytes of images accepted from origins',
      registers: [registry],
    }),
    resizes: new Counter({
      name: 'imageproxy_resizes_total',
      help: 'Thumbnails made, by engine and result (ok, or the error code)',
      labelNames: ['engine', 'result'] as const,
      registers: [registry],
    }),
    resizeSeconds: new Histogram({
      name: 'imageproxy_resize_seconds',
      help: 'Time to make one thumbnail',
      labelNames: ['engine'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
  };
}
