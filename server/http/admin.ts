/**
 * The operators' listener (`admin.listen`): `/metrics` (Prometheus), `/healthz` (alive)
 * and `/readyz` (the tree takes a write and the engine answers). A plain node:http
 * handler with exact paths: nothing else is served, and nothing of it is on the public
 * listener.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../observe/log.js';
import type { Metrics } from '../observe/metrics.js';
import type { ReadinessReport } from './readiness.js';
import { ERROR_CACHE_CONTROL } from './responseHeaders.js';

export interface AdminDependencies {
  /** The registry scraped at `/metrics`: this process's, or the cluster's aggregate (server/http/cluster.ts). */
  metrics: { registry: Pick<Metrics['registry'], 'contentType' | 'metrics'> };
  ready(): Promise<ReadinessReport>;
  logger: Logger;
}

export function createAdminHandler(deps: AdminDependencies): (request: IncomingMessage, response: ServerResponse) => void {
  const answer = (request: IncomingMessage, response: ServerResponse, status: number, type: string, body: string): void => {
    response.writeHead(status, { 'Content-Type': type, 'Cache-Control': ERROR_CACHE_CONTROL, 'X-Content-Type-Options': 'nosniff' });
    response.end(request.method === 'HEAD' ? undefined : body);
  };
  const text = 'text/plain; charset=utf-8';

  const route = async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.setHeader('Allow', 'GET, HEAD');
      return answer(request, response, 405, text, 'method not allowed\n');
    }
    const path = (request.url ?? '/').split('?')[0];
    switch (path) {
      case '/metrics':
        return answer(request, response, 200, deps.metrics.registry.contentType, await deps.metrics.registry.metrics());
      case '/healthz':
        return answer(request, response, 200, text, 'ok\n');
      case '/readyz': {
        const report = await deps.ready();
        if (report.ready) return answer(request, response, 200, text, 'ready\n');
        deps.logger.warn({ checks: report.checks }, 'not ready');
        const failed = Object.entries(report.checks).filter(([, verdict]) => verdict !== 'ok');
        return answer(request, response, 503, text, `not ready: ${failed.map(([name, why]) => `${name}: ${why}`).join('; ')}\n`);
      }
      default:
        return answer(request, response, 404, text, 'not found (admin: /metrics, /healthz, /readyz)\n');
    }
  };

  return (request, response) => {
    route(request, response).catch((error: unknown) => {
      deps.logger.error({ err: error, path: request.url }, 'admin request failed');
      if (!response.headersSent) answer(request, response, 500, text, 'internal error\n');
      else response.destroy();
    });
  };
}
