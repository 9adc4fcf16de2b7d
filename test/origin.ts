/**
 * Origins for tests: a real node:http server on a loopback address that runs the
 * test's handler (which may misbehave on purpose) and counts connections and requests.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export type Handler = (request: http.IncomingMessage, response: http.ServerResponse, origin: Origin) => void;

export interface Origin {
  /** http://host:port + path, host bracketed when IPv6. */
  url(path?: string, host?: string): URL;
  port: number;
  connections: number;
  requests: http.IncomingMessage[];
  close(): Promise<void>;
}

export async function startOrigin(handler: Handler, host = '127.0.0.1'): Promise<Origin> {
  const server = http.createServer();
  const origin: Origin = {
    port: 0,
    connections: 0,
    requests: [],
    url(path = '/', urlHost = host) {
      const bracketed = urlHost.includes(':') ? `[${urlHost}]` : urlHost;
      return new URL(`http://${bracketed}:${this.port}${path}`);
    },
    close() {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
  server.on('connection', () => {
    origin.connections += 1;
  });
  server.on('request', (request: http.IncomingMessage, response: http.ServerResponse) => {
    origin.requests.push(request);
    handler(request, response, origin);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, resolve);
  });
  origin.port = (server.address() as AddressInfo).port;
  return origin;
}
